//! The scheduled prune of the bookkeeping (migration 0006) against the real PostgreSQL, run
//! as the executor's own database role, invoked with the event EventBridge's schedule sends:
//! processed command ids, webhook deliveries and dead letters older than `RETENTION_DAYS`
//! go; younger ones, and the ledger's facts, stay.

mod common;

use adapters::ledger::Ledger;
use executor::{handle_event, Deps};
use rust_decimal_macros::dec;
use serde_json::json;
use sqlx::PgPool;
use testkit::{account_with_cash, service_env};
use uuid::Uuid;

/// The event an EventBridge schedule rule sends.
fn scheduled_event() -> serde_json::Value {
    json!({
        "version": "0",
        "id": Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-12-07T21:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/trading-prune"],
        "detail": {}
    })
}

/// Rows of each table `days` old (or new, with 0), for `account`: their ids.
async fn rows_aged(pool: &PgPool, account: Uuid, days: i32) -> (Uuid, Uuid, Uuid) {
    let (command, delivery, dead) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let webhook = format!("wh_prune_{}", Uuid::new_v4().simple());
    let statements = [
        format!("INSERT INTO processed_commands (command_id, account_id, kind, processed_at) VALUES ('{command}', '{account}', 'place_order', now() - interval '{days} days')"),
        format!("INSERT INTO webhooks (id, account_id, passphrase_hash) VALUES ('{webhook}', '{account}', 'x')"),
        format!("INSERT INTO webhook_deliveries (id, webhook_id, account_id, received_at, body, status, outcome) VALUES ('{delivery}', '{webhook}', '{account}', now() - interval '{days} days', '{{}}', 200, 'accepted')"),
        format!("INSERT INTO dead_letters (command_id, account_id, kind, command, reason, detail, receive_count, dead_at) VALUES ('{dead}', '{account}', 'flatten', '{{}}', 'r', 'd', 20, now() - interval '{days} days')"),
    ];
    for s in statements {
        sqlx::raw_sql(&s).execute(pool).await.unwrap();
    }
    (command, delivery, dead)
}

async fn present(pool: &PgPool, (command, delivery, dead): (Uuid, Uuid, Uuid)) -> [bool; 3] {
    let exists = |sql: &'static str, id: Uuid| async move {
        sqlx::query_scalar::<_, bool>(sql)
            .bind(id)
            .fetch_one(pool)
            .await
            .unwrap()
    };
    [
        exists(
            "SELECT EXISTS (SELECT 1 FROM processed_commands WHERE command_id = $1)",
            command,
        )
        .await,
        exists(
            "SELECT EXISTS (SELECT 1 FROM webhook_deliveries WHERE id = $1)",
            delivery,
        )
        .await,
        exists(
            "SELECT EXISTS (SELECT 1 FROM dead_letters WHERE command_id = $1)",
            dead,
        )
        .await,
    ]
}

#[tokio::test]
async fn the_schedule_prunes_bookkeeping_past_its_retention_and_keeps_the_rest() {
    let owner = testkit::ledger().await;
    let (_, account) = account_with_cash(&owner, dec!(1000)).await;
    let old = rows_aged(owner.pool(), account, 31).await;
    let young = rows_aged(owner.pool(), account, 29).await;
    let deps = Deps {
        // The executor's own role: the prune must be allowed to it (migration 0006).
        ledger: Ledger::connect_lazy(&service_env("DATABASE_EXECUTOR_URL"), 2).unwrap(),
        ..common::deps().await
    };
    assert_eq!(deps.retention.days, 30);

    let answer = handle_event(&deps, scheduled_event()).await.unwrap();
    assert!(
        answer["processed_commands"].as_u64().unwrap() >= 1,
        "{answer}"
    );
    assert_eq!(
        present(owner.pool(), old).await,
        [false; 3],
        "31 days old: pruned"
    );
    assert_eq!(
        present(owner.pool(), young).await,
        [true; 3],
        "29 days old: kept"
    );
    // The ledger's facts are not the prune's.
    assert!(owner.account(account).await.unwrap().is_some());

    // An event of neither kind is an error, not a prune.
    assert!(handle_event(&deps, json!({"hello": "world"}))
        .await
        .is_err());
}
