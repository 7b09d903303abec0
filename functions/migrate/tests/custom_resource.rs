//! The custom resource against the test PostgreSQL (a fresh database per test) with a local
//! HTTP server standing in for CloudFormation's presigned S3 response URL.

mod common;

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use adapters::config::MigrationTarget;
use common::{event, Answer, ResponseUrl};
use migrate::{handle, Limits, PHYSICAL_RESOURCE_ID};
use serde_json::{json, Value};
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgConnection};
use testkit::service_env;
use uuid::Uuid;

const LIMITS: Limits = Limits {
    work_timeout: Duration::from_secs(20),
    connect_timeout: Duration::from_secs(5),
};

/// CloudFormation was told FAILED, with a reason that says `why`.
fn assert_failed_for(answer: &Answer, why: &str) {
    assert_eq!(answer.body["Status"], "FAILED");
    let reason = answer.body["Reason"].as_str().expect("a reason");
    assert!(reason.contains(why), "{reason}");
}

/// CloudFormation was told SUCCESS for `event`, about the one physical resource.
fn assert_succeeded(answer: &Answer, event: &Value) {
    assert_eq!(answer.body["Status"], "SUCCESS", "{}", answer.body);
    assert_eq!(answer.body["PhysicalResourceId"], PHYSICAL_RESOURCE_ID);
    assert_echoes(answer, event);
}

fn assert_echoes(answer: &Answer, event: &Value) {
    for key in ["StackId", "RequestId", "LogicalResourceId"] {
        assert_eq!(answer.body[key], event[key], "{key}");
    }
}

/// The newest migration version, from the file names in infra/migrations (`0003_x.sql`).
fn newest_migration_on_disk() -> (i64, usize) {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../infra/migrations");
    let versions: Vec<i64> = std::fs::read_dir(dir)
        .expect("infra/migrations")
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".sql"))
        .map(|name| name.split('_').next().unwrap().parse().unwrap())
        .collect();
    (*versions.iter().max().unwrap(), versions.len())
}

/// A fresh, empty database on the test PostgreSQL: dropped by [`FreshDatabase::drop_it`].
struct FreshDatabase {
    name: String,
    url: String,
}

impl FreshDatabase {
    async fn create() -> FreshDatabase {
        let name = format!("migrate_cr_{}", Uuid::new_v4().simple());
        let mut admin = admin().await;
        sqlx::query(&format!("create database {name}"))
            .execute(&mut admin)
            .await
            .expect("create database");
        let admin_url = service_env("DATABASE_URL");
        let (server, _) = admin_url.rsplit_once('/').expect("URL with a database");
        FreshDatabase {
            url: format!("{server}/{name}"),
            name,
        }
    }

    async fn tables(&self) -> Vec<String> {
        let mut connection = PgConnection::connect(&self.url).await.expect("connect");
        let tables = sqlx::query_scalar(
            "select table_name::text from information_schema.tables \
             where table_schema = 'public' order by 1",
        )
        .fetch_all(&mut connection)
        .await
        .expect("tables");
        connection.close().await.expect("close");
        tables
    }

    async fn applied_migrations(&self) -> i64 {
        let mut connection = PgConnection::connect(&self.url).await.expect("connect");
        let count = sqlx::query_scalar("select count(*) from _sqlx_migrations where success")
            .fetch_one(&mut connection)
            .await
            .expect("migrations table");
        connection.close().await.expect("close");
        count
    }

    async fn drop_it(self) {
        sqlx::query(&format!("drop database {} with (force)", self.name))
            .execute(&mut admin().await)
            .await
            .expect("drop database");
    }
}

async fn admin() -> PgConnection {
    PgConnectOptions::from_str(&service_env("DATABASE_URL"))
        .expect("DATABASE_URL")
        .connect()
        .await
        .expect("connect to the test database")
}

fn url(url: &str) -> impl Future<Output = Result<MigrationTarget, String>> {
    let target = MigrationTarget {
        database_url: url.to_string(),
        logins: Vec::new(),
    };
    async move { Ok(target) }
}

#[tokio::test]
async fn create_applies_every_migration_update_repeats_nothing_and_delete_keeps_the_schema() {
    let mut cloudformation = ResponseUrl::start().await;
    let database = FreshDatabase::create().await;
    let (newest, count) = newest_migration_on_disk();
    assert!(database.tables().await.is_empty());

    let create = event("Create", &cloudformation.url);
    handle(create.clone(), url(&database.url), LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_succeeded(&answer, &create);
    assert_eq!(answer.body["Data"]["Applied"], newest.to_string());

    let tables = database.tables().await;
    for table in [
        "accounts",
        "fills",
        "orders",
        "positions",
        "users",
        "webhooks",
    ] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    assert_eq!(database.applied_migrations().await, count as i64);

    let update = event("Update", &cloudformation.url);
    handle(update.clone(), url(&database.url), LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_succeeded(&answer, &update);
    assert_eq!(answer.body["Data"]["Applied"], newest.to_string());

    assert_eq!(database.applied_migrations().await, count as i64);
    assert_eq!(database.tables().await, tables);

    // Delete never looks at the database: this URL would panic if awaited.
    let delete = event("Delete", &cloudformation.url);
    let never = async { panic!("Delete must not resolve the database") };
    handle::<_, String>(delete.clone(), never, LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_succeeded(&answer, &delete);

    assert_eq!(database.tables().await, tables);
    assert_eq!(database.applied_migrations().await, count as i64);

    database.drop_it().await;
}

#[tokio::test]
async fn an_unreachable_database_answers_failed_without_the_password() {
    let mut cloudformation = ResponseUrl::start().await;
    // A port nothing listens on: refused at once.
    let port = common::closed_port();
    let password = "Sup3r-s3cret!";
    let database_url = format!("postgres://ledger:{password}@127.0.0.1:{port}/trading");

    let create = event("Create", &cloudformation.url);
    handle(create.clone(), url(&database_url), LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_eq!(answer.body["Status"], "FAILED");
    assert_eq!(answer.body["PhysicalResourceId"], PHYSICAL_RESOURCE_ID);
    assert_echoes(&answer, &create);
    let reason = answer.body["Reason"].as_str().expect("a reason");
    assert!(reason.contains("connecting to the database"), "{reason}");
    assert!(!reason.contains(password), "{reason}");
}

#[tokio::test]
async fn a_database_that_never_answers_is_answered_failed_in_time() {
    let mut cloudformation = ResponseUrl::start().await;
    // Accepts connections and never says a word, like a black-holed proxy.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let limits = Limits {
        work_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    };
    handle(
        event("Update", &cloudformation.url),
        url(&format!("postgres://ledger:pw@127.0.0.1:{port}/trading")),
        limits,
    )
    .await
    .expect("answered");
    // The connect timeout (1 s) ended it, not the work timeout (5 s): the reason names
    // which, so no assertion on how long it took.
    let answer = cloudformation.answer();
    assert_failed_for(&answer, "connecting to the database timed out after 1s");
}

#[tokio::test]
async fn the_work_timeout_bounds_a_slow_configuration() {
    let mut cloudformation = ResponseUrl::start().await;
    let limits = Limits {
        work_timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
    };
    let slow = async {
        tokio::time::sleep(Duration::from_secs(30)).await;
        url("postgres://never").await
    };
    handle(event("Create", &cloudformation.url), slow, limits)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_failed_for(&answer, "did not finish");
}

#[tokio::test]
async fn a_configuration_error_is_answered_failed() {
    let mut cloudformation = ResponseUrl::start().await;
    let broken = async {
        Err::<MigrationTarget, _>(
            "configuration: the database secret arn:aws:secretsmanager:x has no `password`",
        )
    };
    handle(event("Create", &cloudformation.url), broken, LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_failed_for(&answer, "has no `password`");
    assert_eq!(answer.body["PhysicalResourceId"], PHYSICAL_RESOURCE_ID);
}

#[tokio::test]
async fn a_malformed_event_is_answered_failed_when_it_says_where() {
    let mut cloudformation = ResponseUrl::start().await;
    let mut malformed = event("Create", &cloudformation.url);
    malformed
        .as_object_mut()
        .unwrap()
        .remove("LogicalResourceId");
    handle(malformed, url("postgres://unused"), LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_failed_for(&answer, "malformed request");

    let mut unknown = event("Replace", &cloudformation.url);
    unknown["PhysicalResourceId"] = json!("older-id");
    handle(unknown, url("postgres://unused"), LIMITS)
        .await
        .expect("answered");
    let answer = cloudformation.answer();
    assert_eq!(answer.body["Status"], "FAILED");
    assert_eq!(answer.body["PhysicalResourceId"], "older-id");

    let nowhere = json!({ "RequestType": "Create" });
    let error = handle(nowhere, url("postgres://unused"), LIMITS)
        .await
        .expect_err("nowhere to answer");
    assert!(error.to_string().contains("no ResponseURL"), "{error}");
}

#[tokio::test]
async fn a_refused_answer_is_an_error_for_lambda_to_retry() {
    let port = common::closed_port();
    let response_url =
        format!("http://127.0.0.1:{port}/cloudformation-response?X-Amz-Signature=s3cr3t");
    let error = handle::<_, String>(
        event("Delete", &response_url),
        async { panic!("not resolved on Delete") },
        LIMITS,
    )
    .await
    .expect_err("the answer could not be sent");
    assert!(!error.to_string().contains("s3cr3t"), "{error}");
}

#[test]
fn the_sample_event_is_a_create_request() {
    use aws_lambda_events::cloudformation::CloudFormationCustomResourceRequest;
    let sample = include_str!("../../../events/migrate-create.json");
    let request: CloudFormationCustomResourceRequest =
        serde_json::from_str(sample).expect("events/migrate-create.json parses");
    assert!(matches!(
        request,
        CloudFormationCustomResourceRequest::Create(_)
    ));
}
