//! The database URL from a Secrets Manager secret (moto) in the shape RDS writes, connected
//! to the test PostgreSQL.

use std::str::FromStr;

use adapters::config::{secrets_client, DatabaseSecretSource};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection};
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
        // The test PostgreSQL has no TLS; the TLS path is the next test.
        ssl_mode: "disable".into(),
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

#[tokio::test]
async fn the_default_sslmode_requires_tls() {
    let source = DatabaseSecretSource {
        secret_id: rds_style_secret(&test_database_host()).await,
        host: None,
        port: None,
        dbname: None,
        ssl_mode: "require".into(),
    };
    let url = source
        .fetch_url(&secrets_client().await)
        .await
        .expect("URL from the secret");
    assert!(url.ends_with("?sslmode=require"), "{url}");
    // The test PostgreSQL runs without TLS: a build with TLS support asks for it and is
    // refused by the server (a build without would fail before asking).
    let error = PgConnectOptions::from_str(&url)
        .expect("URL parses")
        .connect()
        .await
        .expect_err("no TLS on the test server")
        .to_string();
    assert!(error.contains("server does not support TLS"), "{error}");
}

#[tokio::test]
async fn a_missing_secret_is_a_configuration_error_naming_it() {
    let source = DatabaseSecretSource {
        secret_id: format!("adapters-test-missing-{}", Uuid::new_v4().simple()),
        host: None,
        port: None,
        dbname: None,
        ssl_mode: "require".into(),
    };
    let error = source
        .fetch_url(&secrets_client().await)
        .await
        .expect_err("no such secret")
        .to_string();
    assert!(error.contains(&source.secret_id), "{error}");
}
