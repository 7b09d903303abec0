//! Least privilege in the ledger: each function's database role (created by the migrations,
//! given its login by the migrate step) may write only what its function owns. Each
//! statement is tried as the role itself, over a real login, in a transaction that is rolled
//! back; statements that touch no row still pass PostgreSQL's privilege check, so an allowed
//! write here proves the grant and a refused one proves its absence.

use std::time::Duration;

use adapters::config::role_login_from_url;
use adapters::schema::{apply_migrations, FunctionRole};
use sqlx::{Connection, PgConnection};
use testkit::service_env;

/// PostgreSQL's `insufficient_privilege`.
const REFUSED: &str = "42501";

fn role_url(role: FunctionRole) -> String {
    service_env(&format!("DATABASE_{}_URL", role.env_name()))
}

/// Migrates the test database and lets every function role log in, as the deploy does.
async fn migrated_with_logins() {
    let logins: Vec<_> = FunctionRole::ALL
        .into_iter()
        .map(|role| role_login_from_url(role, &role_url(role)).expect("the role's URL"))
        .collect();
    apply_migrations(
        &service_env("DATABASE_URL"),
        Duration::from_secs(30),
        &logins,
    )
    .await
    .expect("migrations and logins apply");
}

/// The SQLSTATE of running `statement` as `role` (`None`: it ran), always rolled back.
async fn try_as(role: FunctionRole, statement: &str) -> Option<String> {
    let mut connection = PgConnection::connect(&role_url(role))
        .await
        .unwrap_or_else(|e| panic!("{} logs in: {e}", role.role_name()));
    let mut transaction = connection.begin().await.expect("begin");
    let outcome = sqlx::raw_sql(statement).execute(&mut *transaction).await;
    transaction.rollback().await.ok();
    outcome.err().map(|e| match e {
        sqlx::Error::Database(e) => e.code().map(|c| c.to_string()).unwrap_or_default(),
        other => panic!("{statement}: {other}"),
    })
}

async fn assert_allowed(role: FunctionRole, statements: &[&str]) {
    for statement in statements {
        let outcome = try_as(role, statement).await;
        assert_eq!(outcome, None, "{} may run: {statement}", role.role_name());
    }
}

async fn assert_refused(role: FunctionRole, statements: &[&str]) {
    for statement in statements {
        let outcome = try_as(role, statement).await;
        assert_eq!(
            outcome.as_deref(),
            Some(REFUSED),
            "{} must be refused: {statement}",
            role.role_name()
        );
    }
}

/// Every table of the ledger, read by every role.
const READS: &[&str] = &[
    "SELECT count(*) FROM users",
    "SELECT count(*) FROM accounts",
    "SELECT count(*) FROM api_keys",
    "SELECT count(*) FROM orders",
    "SELECT count(*) FROM fills",
    "SELECT count(*) FROM positions",
    "SELECT count(*) FROM processed_commands",
    "SELECT count(*) FROM risk_limits",
    "SELECT count(*) FROM webhooks",
    "SELECT count(*) FROM webhook_deliveries",
    "SELECT count(*) FROM dead_letters",
];

/// The executor's writes: orders, fills, positions, processed commands, cash and PnL.
const LEDGER_WRITES: &[&str] = &[
    "INSERT INTO orders SELECT * FROM orders WHERE false",
    "UPDATE orders SET status = status WHERE false",
    "INSERT INTO fills SELECT * FROM fills WHERE false",
    "INSERT INTO positions SELECT * FROM positions WHERE false",
    "UPDATE positions SET qty = qty WHERE false",
    "INSERT INTO processed_commands SELECT * FROM processed_commands WHERE false",
    "INSERT INTO dead_letters SELECT * FROM dead_letters WHERE false",
    "UPDATE accounts SET cash = cash, realized_pnl = realized_pnl, fees_paid = fees_paid, updated_at = now() WHERE false",
];

/// The api's writes: identities, credentials, webhooks, deliveries, risk limits, the kill
/// switch, and opening an account.
const API_WRITES: &[&str] = &[
    "INSERT INTO users SELECT * FROM users WHERE false",
    "UPDATE users SET password_hash = password_hash WHERE false",
    "INSERT INTO api_keys SELECT * FROM api_keys WHERE false",
    "UPDATE api_keys SET revoked_at = now() WHERE false",
    "INSERT INTO webhooks SELECT * FROM webhooks WHERE false",
    "UPDATE webhooks SET deleted_at = now() WHERE false",
    "INSERT INTO webhook_deliveries SELECT * FROM webhook_deliveries WHERE false",
    "INSERT INTO risk_limits SELECT * FROM risk_limits WHERE false",
    "UPDATE risk_limits SET max_open_orders = 1 WHERE false",
    "INSERT INTO accounts (id, user_id, account_number, initial_cash, cash) SELECT id, user_id, account_number, initial_cash, cash FROM accounts WHERE false",
];

/// The executor's scheduled prune of the bookkeeping (migration 0006): nobody else deletes.
const RETENTION: &[&str] = &[
    "DELETE FROM processed_commands WHERE false",
    "DELETE FROM webhook_deliveries WHERE false",
    "DELETE FROM dead_letters WHERE false",
];

/// Changes nobody makes: the ledger keeps every row, deliveries are a record.
const NEVER: &[&str] = &[
    "DELETE FROM fills WHERE false",
    "UPDATE fills SET qty = qty WHERE false",
    "DELETE FROM orders WHERE false",
    "DELETE FROM positions WHERE false",
    "DELETE FROM accounts WHERE false",
    "DELETE FROM users WHERE false",
    "UPDATE webhook_deliveries SET status = status WHERE false",
    "TRUNCATE fills",
    "SELECT count(*) FROM _sqlx_migrations",
];

#[tokio::test]
async fn the_api_role_writes_what_the_api_owns_and_never_the_ledger() {
    migrated_with_logins().await;
    let api = FunctionRole::Api;
    assert_allowed(api, READS).await;
    assert_allowed(api, API_WRITES).await;
    assert_allowed(
        api,
        &["UPDATE accounts SET killed_at = now(), kill_reason = 'x' WHERE false"],
    )
    .await;
    assert_refused(api, LEDGER_WRITES).await;
    assert_refused(api, NEVER).await;
    assert_refused(api, RETENTION).await;
    // An account opened with PnL or fees already booked, or its cash changed later.
    assert_refused(
        api,
        &[
            "INSERT INTO accounts (id, user_id, account_number, initial_cash, cash, realized_pnl) SELECT id, user_id, account_number, initial_cash, cash, 1 FROM accounts WHERE false",
            "UPDATE accounts SET cash = 1000000 WHERE false",
        ],
    )
    .await;
    // A real fill, not a no-op: refused before any constraint is looked at.
    assert_refused(
        api,
        &["INSERT INTO fills (id, account_id, order_id, symbol, side, qty, price, fee, realized_pnl, cum_qty, leaves_qty, transaction_time)
           VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'BTCUSDT', 'buy', 1, 1, 0, 0, 1, 0, now())"],
    )
    .await;
}

#[tokio::test]
async fn the_executor_role_writes_the_ledger_and_nothing_the_api_owns() {
    migrated_with_logins().await;
    let executor = FunctionRole::Executor;
    assert_allowed(executor, READS).await;
    assert_allowed(executor, LEDGER_WRITES).await;
    assert_allowed(executor, RETENTION).await;
    // The daily loss limit trips the kill switch in the executor's transaction.
    assert_allowed(
        executor,
        &["UPDATE accounts SET killed_at = now(), kill_reason = 'x' WHERE false"],
    )
    .await;
    assert_refused(executor, API_WRITES).await;
    assert_refused(executor, NEVER).await;
}

#[tokio::test]
async fn the_ingest_role_only_reads() {
    migrated_with_logins().await;
    let ingest = FunctionRole::Ingest;
    assert_allowed(ingest, READS).await;
    assert_refused(ingest, LEDGER_WRITES).await;
    assert_refused(ingest, API_WRITES).await;
    assert_refused(ingest, NEVER).await;
    assert_refused(ingest, RETENTION).await;
    assert_refused(
        ingest,
        &["UPDATE accounts SET killed_at = now() WHERE false"],
    )
    .await;
}

#[tokio::test]
async fn no_function_role_can_change_the_schema() {
    migrated_with_logins().await;
    for role in FunctionRole::ALL {
        assert_refused(
            role,
            &[
                "CREATE TABLE public.sneaky (id int)",
                "ALTER TABLE fills DISABLE TRIGGER fills_immutable",
                "DROP TABLE webhook_deliveries",
            ],
        )
        .await;
    }
}
