//! The database URL from a Secrets Manager secret (moto) in the shape RDS writes, connected
//! to the test PostgreSQL.

use std::str::FromStr;

use adapters::config::{secrets_client, DatabaseSecretSource};
use adapters::ledger::Ledger;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use testkit::service_env;
use uuid::Uuid;

/// A secret of our own (moto is shared) holding the test database's credentials with the
/// given host; its ARN.
async fn rds_style_secret(host: &str) -> String {
    let admin = PgConnectOptions::from_str(&service_env("DATABASE_URL")).expect("DATABASE_URL");
    // PgConnectOptions keeps the password to itself; the test URL's is plain text.
    let url = service_env("DATABASE_URL");
    let password = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|authority| authority.rsplit_once('@'))
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .map(|(_, password)| password)
        .unwrap_or_default();
    let secret = serde_json::json!({
        "username": admin.get_username(),
        "password": password,
        "engine": "postgres",
        "host": host,
        "port": admin.get_port(),
        "dbname": admin.get_database().unwrap_or("trading"),
    });
    let created = secrets_client()
        .await
        .create_secret()
        .name(format!("adapters-test-db-{}", Uuid::new_v4().simple()))
        .secret_string(secret.to_string())
        .send()
        .await
        .expect("secret created in moto");
    created.arn().expect("moto returns the ARN").to_string()
}

fn test_database_host() -> String {
    PgConnectOptions::from_str(&service_env("DATABASE_URL"))
        .expect("DATABASE_URL")
        .get_host()
        .to_string()
}

#[tokio::test]
async fn the_secret_with_the_host_overridden_reaches_the_database() {
    let source = DatabaseSecretSource {
        secret_id: rds_style_secret("wrong-host.invalid").await,
        host: Some(test_database_host()),
        port: None,
        dbname: None,
        // Plain; the TLS tests follow.
        ssl_mode: "disable".into(),
        ssl_root_cert: None,
    };
    let url = source
        .fetch_url(&secrets_client().await)
        .await
        .expect("URL from the secret");
    assert!(!url.contains("wrong-host"), "DATABASE_HOST wins: {url}");

    let mut connection = sqlx::PgConnection::connect(&url)
        .await
        .expect("connects with the secret's credentials");
    let one: i32 = sqlx::query_scalar("select 1")
        .fetch_one(&mut connection)
        .await
        .expect("select 1");
    assert_eq!(one, 1);
    connection.close().await.expect("close");
}

/// A source for the test database's secret reached as `host`, over TLS in `ssl_mode`, trusting
/// the local CA (`DATABASE_CA_FILE`, which signed the server's certificate for `localhost`)
/// when `trust_local_ca`.
async fn tls_source(host: &str, ssl_mode: &str, trust_local_ca: bool) -> DatabaseSecretSource {
    DatabaseSecretSource {
        secret_id: rds_style_secret(host).await,
        host: None,
        port: None,
        dbname: None,
        ssl_mode: ssl_mode.into(),
        ssl_root_cert: trust_local_ca.then(|| service_env("DATABASE_CA_FILE")),
    }
}

/// Connects with the source's URL; whether the session is encrypted, or the error.
async fn connect_tls(source: &DatabaseSecretSource) -> Result<bool, String> {
    let url = source
        .fetch_url(&secrets_client().await)
        .await
        .expect("URL from the secret");
    // Through the ledger's own pool: the functions connect no other way.
    let ledger = Ledger::connect_lazy(&url, 1).expect("URL parses");
    let encrypted =
        sqlx::query_scalar::<_, bool>("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(ledger.pool())
            .await
            .map_err(|e| e.to_string());
    ledger.pool().close().await;
    encrypted
}

#[tokio::test]
async fn verify_full_connects_to_a_server_whose_certificate_names_it_and_chains_to_a_trusted_root()
{
    let source = tls_source("localhost", "verify-full", true).await;
    assert_eq!(connect_tls(&source).await, Ok(true));
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_name() {
    // The same server and a trusted chain, but the certificate names `localhost`, not the
    // address dialled: what a machine in the path presenting another host's certificate
    // looks like.
    let source = tls_source("127.0.0.1", "verify-full", true).await;
    let error = connect_tls(&source).await.expect_err("wrong name");
    assert!(error.contains("not valid for name"), "{error}");
    // The same chain is trusted for `localhost` (the test before): the name is what failed.
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_from_an_untrusted_issuer() {
    // Without the local CA only the public roots are trusted (RDS Proxy's chain to Amazon
    // Trust Services; see the next test), so a self-made certificate is refused...
    let source = tls_source("localhost", "verify-full", false).await;
    let error = connect_tls(&source).await.expect_err("unknown issuer");
    assert!(error.contains("UnknownIssuer"), "{error}");
    // ...which `require` would have accepted: it encrypts and verifies nothing.
    let source = tls_source("localhost", "require", false).await;
    assert_eq!(connect_tls(&source).await, Ok(true));
}

#[test]
fn the_public_roots_trust_rds_proxy_whose_certificates_come_from_amazon_trust_services() {
    // RDS Proxy presents an ACM certificate; ACM's chains end at Amazon Root CA 1-4 (or the
    // Starfield G2 root that cross-signs them). They are among the roots compiled in.
    let subjects: Vec<String> = webpki_roots::TLS_SERVER_ROOTS
        .iter()
        .map(|root| String::from_utf8_lossy(root.subject.as_ref()).into_owned())
        .collect();
    for root in [
        "Amazon Root CA 1",
        "Amazon Root CA 2",
        "Amazon Root CA 3",
        "Amazon Root CA 4",
    ] {
        assert!(
            subjects.iter().any(|s| s.contains(root)),
            "{root} is not among the bundled roots"
        );
    }
}

#[tokio::test]
async fn a_missing_secret_is_a_configuration_error_naming_it() {
    let source = DatabaseSecretSource {
        secret_id: format!("adapters-test-missing-{}", Uuid::new_v4().simple()),
        host: None,
        port: None,
        dbname: None,
        ssl_mode: "require".into(),
        ssl_root_cert: None,
    };
    let error = source
        .fetch_url(&secrets_client().await)
        .await
        .expect_err("no such secret")
        .to_string();
    assert!(error.contains(&source.secret_id), "{error}");
}
