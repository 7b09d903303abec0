//! Risk limits and the kill switch, applied by the executor on the ledger (real PostgreSQL
//! and Redis): each limit refuses exactly past its boundary, the daily loss limit trips the
//! kill switch, and the kill switch's flatten sells everything.

mod common;
use chrono::Utc;
use common::deps;
use domain::catalog::Catalog;
use domain::command::Command;
use domain::order::{NewOrder, Order, OrderRequest, OrderStatus};
use domain::risk::RiskLimits;
use executor::{apply, Deps};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use testkit::{account_with_cash, put_quote};
use uuid::Uuid;

fn order(account: Uuid, json: &str) -> Command {
    let mut v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["client_order_id"] = serde_json::json!(Uuid::new_v4().simple().to_string());
    let req: OrderRequest = serde_json::from_value(v).unwrap();
    let (v, inst) = req.validate(Catalog::builtin()).unwrap();
    Command::place(NewOrder::new(account, v, inst.asset_id, Utc::now()))
}

fn market(account: Uuid, symbol: &str, side: &str, qty: &str) -> Command {
    order(
        account,
        &format!(
            r#"{{"symbol":"{symbol}","qty":"{qty}","side":"{side}","type":"market","time_in_force":"gtc"}}"#
        ),
    )
}

fn limit(account: Uuid, side: &str, qty: &str, price: &str) -> Command {
    order(
        account,
        &format!(
            r#"{{"symbol":"BTCUSDT","qty":"{qty}","side":"{side}","type":"limit","limit_price":"{price}","time_in_force":"gtc"}}"#
        ),
    )
}

async fn run(deps: &Deps, c: Command) -> Order {
    apply(deps, &c).await.unwrap().order.unwrap()
}

fn rule(o: &Order) -> String {
    assert_eq!(o.status, OrderStatus::Rejected, "{o:?}");
    let reason = o.reject_reason.clone().unwrap_or_default();
    reason.split(':').next().unwrap_or_default().to_string()
}

/// A new account with `cash` and these risk limits set.
async fn limited_account(deps: &Deps, cash: Decimal, limits: RiskLimits) -> Uuid {
    let (_, account) = account_with_cash(&deps.ledger, cash).await;
    deps.ledger.set_risk_limits(account, &limits).await.unwrap();
    account
}

/// The status of the order `c` places (or triggers).
async fn status(deps: &Deps, c: Command) -> OrderStatus {
    run(deps, c).await.status
}

#[tokio::test]
async fn each_limit_refuses_exactly_past_its_boundary() {
    let deps = deps().await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;

    // max_order_notional 600: 0.01 at 60,000 is exactly 600.
    let l = RiskLimits {
        max_order_notional: Some(dec!(600)),
        ..RiskLimits::none()
    };
    let a = limited_account(&deps, dec!(100000), l).await;
    assert_eq!(
        status(&deps, market(a, "BTCUSDT", "buy", "0.01")).await,
        OrderStatus::Filled
    );
    let o = run(&deps, limit(a, "buy", "0.01", "60000.01")).await;
    assert_eq!(rule(&o), "max_order_notional");
    assert!(o.reject_reason.unwrap().contains("600.0001 USDT"));

    // max_position_notional 1,200: the position after the order, at its price.
    let l = RiskLimits {
        max_position_notional: Some(dec!(1200)),
        ..RiskLimits::none()
    };
    let b = limited_account(&deps, dec!(100000), l).await;
    assert_eq!(
        status(&deps, market(b, "BTCUSDT", "buy", "0.01")).await,
        OrderStatus::Filled
    );
    assert_eq!(
        status(&deps, market(b, "BTCUSDT", "buy", "0.01")).await,
        OrderStatus::Filled
    );
    let o = run(&deps, market(b, "BTCUSDT", "buy", "0.0002")).await;
    assert_eq!(rule(&o), "max_position_notional");
    // Selling is never refused by an exposure limit.
    let sell = run(&deps, market(b, "BTCUSDT", "sell", "0.0002")).await;
    assert_eq!(sell.status, OrderStatus::Filled, "{:?}", sell.reject_reason);

    // max_open_orders 2: the third resting order is refused.
    let l = RiskLimits {
        max_open_orders: Some(2),
        ..RiskLimits::none()
    };
    let c = limited_account(&deps, dec!(100000), l).await;
    for _ in 0..2 {
        assert_eq!(
            status(&deps, limit(c, "buy", "0.001", "50000")).await,
            OrderStatus::New
        );
    }
    assert_eq!(
        rule(&run(&deps, limit(c, "buy", "0.001", "50000")).await),
        "max_open_orders"
    );

    // max_gross_leverage 0.5 on 10,000: after buying 4,800 (fee 4.8) equity is 9,995.2,
    // so 197.6 more is the most; 0.0033 BTC (198) is over, 0.0032 (192) is not.
    let l = RiskLimits {
        max_gross_leverage: Some(dec!(0.5)),
        ..RiskLimits::none()
    };
    let d = limited_account(&deps, dec!(10000), l).await;
    assert_eq!(
        status(&deps, market(d, "BTCUSDT", "buy", "0.08")).await,
        OrderStatus::Filled
    );
    let o = run(&deps, market(d, "BTCUSDT", "buy", "0.0033")).await;
    assert_eq!(rule(&o), "max_gross_leverage");
    assert!(o.reject_reason.unwrap().contains("9995.2"));
    assert_eq!(
        status(&deps, market(d, "BTCUSDT", "buy", "0.0032")).await,
        OrderStatus::Filled
    );
}

#[tokio::test]
async fn an_account_without_limits_set_has_the_defaults() {
    let deps = deps().await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let (_, a) = account_with_cash(&deps.ledger, dec!(1000000)).await;
    let risk = deps.ledger.risk(a).await.unwrap().unwrap();
    assert_eq!(risk.limits, RiskLimits::default());
    // 100,000 is the default max order notional: 1.66667 BTC (100,000.2) is over it.
    let o = run(&deps, market(a, "BTCUSDT", "buy", "1.66667")).await;
    assert_eq!(rule(&o), "max_order_notional");
    assert_eq!(
        status(&deps, market(a, "BTCUSDT", "buy", "1.66666")).await,
        OrderStatus::Filled
    );
}

#[tokio::test]
async fn the_daily_loss_limit_trips_the_kill_switch_until_reset() {
    let deps = deps().await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let l = RiskLimits {
        daily_loss_limit: Some(dec!(75)),
        ..RiskLimits::none()
    };
    let a = limited_account(&deps, dec!(100000), l).await;
    // Realized today: -6 (the fee of the buy), then -30 - 2.97 for each half sold 600 lower.
    run(&deps, market(a, "BTCUSDT", "buy", "0.1")).await;
    put_quote(&deps.cache, "BTCUSDT", dec!(59400), dec!(59400)).await;
    run(&deps, market(a, "BTCUSDT", "sell", "0.05")).await;
    run(&deps, market(a, "BTCUSDT", "sell", "0.05")).await;
    let risk = deps.ledger.risk(a).await.unwrap().unwrap();
    assert_eq!(risk.realized_today, dec!(-71.94));
    assert!(risk.kill.is_none());
    // A buy's fee of 5.94 takes the day to -77.88: the limit of 75 is reached.
    run(&deps, market(a, "BTCUSDT", "buy", "0.1")).await;
    let risk = deps.ledger.risk(a).await.unwrap().unwrap();
    let kill = risk.kill.expect("tripped");
    assert!(
        kill.reason.starts_with("daily_loss_limit"),
        "{}",
        kill.reason
    );
    // Every new order is refused, sells included, until the switch is reset.
    assert_eq!(
        rule(&run(&deps, market(a, "BTCUSDT", "buy", "0.001")).await),
        "kill_switch"
    );
    assert_eq!(
        rule(&run(&deps, market(a, "BTCUSDT", "sell", "0.001")).await),
        "kill_switch"
    );
    // Without flatten_on_kill the position stays.
    let pos = deps.ledger.position(a, "BTCUSDT").await.unwrap().unwrap();
    assert_eq!(pos.position.qty, dec!(0.1));
    deps.ledger.reset_kill(a).await.unwrap();
    assert_eq!(
        status(&deps, market(a, "BTCUSDT", "sell", "0.001")).await,
        OrderStatus::Filled
    );
    // Reset by hand: more loss the same day does not trip again while under the limit.
    assert!(deps.ledger.risk(a).await.unwrap().unwrap().kill.is_none());
}

#[tokio::test]
async fn flatten_on_kill_sells_every_position_and_cancels_open_orders() {
    let deps = deps().await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    put_quote(&deps.cache, "ETHUSDT", dec!(3000), dec!(3000)).await;
    let l = RiskLimits {
        daily_loss_limit: Some(dec!(50)),
        flatten_on_kill: true,
        ..RiskLimits::none()
    };
    let a = limited_account(&deps, dec!(100000), l).await;
    run(&deps, market(a, "BTCUSDT", "buy", "0.1")).await;
    run(&deps, market(a, "ETHUSDT", "buy", "1")).await;
    let resting = run(&deps, limit(a, "buy", "0.01", "50000")).await;
    assert_eq!(resting.status, OrderStatus::New);
    // A filled bracket's exits rest and hold the quantity they would sell.
    let bracket = run(
        &deps,
        order(
            a,
            r#"{"symbol":"ETHUSDT","qty":"0.5","side":"buy","type":"market","time_in_force":"gtc","order_class":"bracket","take_profit":{"limit_price":"3500"},"stop_loss":{"stop_price":"2500"}}"#,
        ),
    )
    .await;
    assert_eq!(bracket.status, OrderStatus::Filled);
    assert_eq!(deps.ledger.open_orders(a).await.unwrap().len(), 3);
    // Fees of 10.5, then selling half the BTC 1,000 lower loses 50 + 2.95: the day reaches -63.45.
    put_quote(&deps.cache, "BTCUSDT", dec!(59000), dec!(59000)).await;
    run(&deps, market(a, "BTCUSDT", "sell", "0.05")).await;
    let risk = deps.ledger.risk(a).await.unwrap().unwrap();
    assert!(risk.kill.is_some());
    for symbol in ["BTCUSDT", "ETHUSDT"] {
        let qty = deps
            .ledger
            .position(a, symbol)
            .await
            .unwrap()
            .map(|p| p.position.qty)
            .unwrap_or_default();
        assert_eq!(qty, Decimal::ZERO, "{symbol} not flattened");
    }
    assert!(deps.ledger.open_orders(a).await.unwrap().is_empty());
    let canceled = deps
        .ledger
        .order(domain::order::OrderRef {
            account_id: a,
            order_id: resting.id,
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(canceled.status, OrderStatus::Canceled);
}

#[tokio::test]
async fn a_kill_by_hand_with_a_flatten_command_flattens_and_blocks_resting_buys() {
    let deps = deps().await;
    put_quote(&deps.cache, "BTCUSDT", dec!(60000), dec!(60000)).await;
    let (_, a) = account_with_cash(&deps.ledger, dec!(100000)).await;
    run(&deps, market(a, "BTCUSDT", "buy", "0.02")).await;
    let resting = run(&deps, limit(a, "buy", "0.01", "59000")).await;
    assert_eq!(resting.status, OrderStatus::New);
    let kill = deps.ledger.kill(a, "by hand").await.unwrap();
    assert_eq!(kill.reason, "by hand");
    // A resting buy whose price comes while killed is canceled, not filled.
    put_quote(&deps.cache, "BTCUSDT", dec!(58900), dec!(58900)).await;
    let triggered = run(&deps, Command::trigger(a, resting.id, "BTCUSDT", None)).await;
    assert_eq!(triggered.status, OrderStatus::Canceled);
    assert!(triggered.reject_reason.unwrap().starts_with("kill_switch"));
    // The flatten sells the position although the switch is on.
    apply(&deps, &Command::flatten(a)).await.unwrap();
    let pos = deps.ledger.position(a, "BTCUSDT").await.unwrap();
    assert!(
        pos.as_ref().is_none_or(|p| p.position.qty.is_zero()),
        "{pos:?}"
    );
    let sold: Vec<Order> = deps
        .ledger
        .orders(
            a,
            &adapters::ledger::OrderQuery {
                status: adapters::ledger::StatusFilter::All,
                limit: 100,
                after: None,
                until: None,
                ascending: true,
                symbols: None,
                nested: false,
            },
        )
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.client_order_id.starts_with("flatten-"))
        .collect();
    assert_eq!(sold.len(), 1);
    assert_eq!(sold[0].status, OrderStatus::Filled);
    assert_eq!(sold[0].filled_avg_price, Some(dec!(58900)));
}
