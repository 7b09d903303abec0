//! An order whose command the executor gave up on (recorded in `dead_letters` on its last
//! delivery, the message in the dead-letter queue) is shown to its account as `suspended`
//! with the reason, by id and in the listings, over its pending copy; to no other account;
//! and once a redrive applies it, the ledger's order is shown instead.

use adapters::ledger::{DeadLetter, OrderQuery, StatusFilter};
use chrono::Utc;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, OrderRequest, OrderStatus};
use rust_decimal_macros::dec;
use testkit::{account_with_cash, put_quote};

fn query(status: StatusFilter) -> OrderQuery {
    OrderQuery {
        status,
        limit: 50,
        after: None,
        until: None,
        ascending: false,
        symbols: None,
        nested: true,
    }
}

#[tokio::test]
async fn a_dead_lettered_order_is_suspended_with_its_reason_until_a_redrive_applies_it() {
    let deps = testkit::app_deps().await;
    let (_, account) = account_with_cash(&deps.ledger, dec!(100000)).await;
    let (_, other) = account_with_cash(&deps.ledger, dec!(100000)).await;
    let req: OrderRequest = serde_json::from_str(
        r#"{"symbol":"BTCUSDT","qty":"0.001","side":"buy","type":"market","time_in_force":"gtc","client_order_id":"dead-1"}"#,
    )
    .unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    let order = NewOrder::new(account, v, inst.asset_id, Utc::now());
    // Accepted by the api (its pending copy), then given up on by the executor.
    deps.cache.put_pending_order(&order).await.unwrap();
    let command = Command::place(order.clone());
    deps.ledger
        .record_dead_letters(&[DeadLetter {
            command: command.clone(),
            reason: "not applied after 20 attempts: the service was unavailable".into(),
            detail: "redis is unavailable: connection refused".into(),
            receive_count: 20,
        }])
        .await
        .unwrap();
    let id = order.id.to_string();

    let shown = app::orders::get(&deps, account, &id).await.unwrap();
    assert_eq!(shown.status, OrderStatus::Suspended);
    assert!(shown.failed_at.is_some());
    assert_eq!(
        shown.reject_reason.as_deref(),
        Some("not applied after 20 attempts: the service was unavailable")
    );
    let by_coid = app::orders::by_client_order_id(&deps, account, Some("dead-1".into()))
        .await
        .unwrap();
    assert_eq!(by_coid.status, OrderStatus::Suspended);
    // Closed, listed once, not among the open ones (its pending copy notwithstanding).
    let all = app::orders::list(&deps, account, &query(StatusFilter::All))
        .await
        .unwrap();
    assert_eq!(all.iter().filter(|o| o.id == order.id).count(), 1);
    assert_eq!(all[0].status, OrderStatus::Suspended);
    let closed = app::orders::list(&deps, account, &query(StatusFilter::Closed))
        .await
        .unwrap();
    assert_eq!(closed.len(), 1);
    let open = app::orders::list(&deps, account, &query(StatusFilter::Open))
        .await
        .unwrap();
    assert!(open.is_empty(), "{open:?}");
    // Nothing of it for another account.
    assert!(app::orders::get(&deps, other, &id).await.is_err());
    assert!(app::orders::list(&deps, other, &query(StatusFilter::All))
        .await
        .unwrap()
        .is_empty());

    // Redriven and applied: the ledger's order.
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let quotes = deps.cache.quotes(&["BTCUSDT".to_string()]).await.unwrap();
    deps.ledger
        .apply_commands(
            &[command],
            &quotes,
            Catalog::builtin(),
            adapters::now_ms(),
            &domain::engine::ExecutionParams::default(),
        )
        .await
        .unwrap();
    let shown = app::orders::get(&deps, account, &id).await.unwrap();
    assert_eq!(shown.status, OrderStatus::Filled);
    let all = app::orders::list(&deps, account, &query(StatusFilter::All))
        .await
        .unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].status, OrderStatus::Filled);
}
