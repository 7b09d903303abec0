//! Server-side ceilings that no account setting lifts.

use domain::order::Side;
use domain::risk::{check_order, OrderExposure, RiskLimits, RiskState, MAX_OPEN_ORDERS_CEILING};
use domain::RejectCode;
use rust_decimal::Decimal;

fn state(max_open_orders: Option<u32>) -> RiskState {
    RiskState {
        limits: RiskLimits {
            max_open_orders,
            ..RiskLimits::none()
        },
        kill: None,
        realized_today: Decimal::ZERO,
        tripped: false,
    }
}

fn order(open_orders: usize, replaces: bool) -> OrderExposure {
    OrderExposure {
        side: Side::Buy,
        symbol: "BTCUSDT".into(),
        notional: Decimal::ONE,
        position_after: Decimal::ONE,
        open_orders,
        gross: Decimal::ZERO,
        equity: Decimal::from(1_000_000),
        replaces,
    }
}

#[test]
fn open_orders_stop_at_the_ceiling_whatever_the_limit() {
    let ceiling = MAX_OPEN_ORDERS_CEILING as usize;
    for limit in [None, Some(MAX_OPEN_ORDERS_CEILING), Some(u32::MAX)] {
        assert!(check_order(&state(limit), &order(ceiling - 1, false)).is_ok());
        let e = check_order(&state(limit), &order(ceiling, false)).unwrap_err();
        assert_eq!(e.code, RejectCode::MaxOpenOrders, "{limit:?}");
        // A replacement takes its order's place: allowed at the ceiling.
        assert!(check_order(&state(limit), &order(ceiling, true)).is_ok());
    }
    let e = check_order(&state(None), &order(ceiling, false)).unwrap_err();
    assert!(
        e.message.contains("server's ceiling of 1000"),
        "{}",
        e.message
    );
    // A lower limit of the account's own still applies, and says so.
    let e = check_order(&state(Some(3)), &order(3, false)).unwrap_err();
    assert!(e.message.contains("max_open_orders of 3"), "{}", e.message);
}
