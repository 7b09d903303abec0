"""alpaca-py's order types, classes and order management against our API: stop, stop-limit,
trailing stop, bracket (legs nested as Alpaca shows them), replace, cancel-all and closing
positions. Every response goes through alpaca-py's own models."""

from __future__ import annotations

from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.enums import OrderClass, OrderSide, OrderStatus, OrderType, QueryOrderStatus, TimeInForce
from alpaca.trading.models import Order
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetOrdersRequest,
    MarketOrderRequest,
    ReplaceOrderRequest,
    StopLimitOrderRequest,
    StopLossRequest,
    StopOrderRequest,
    TakeProfitRequest,
    TrailingStopOrderRequest,
)

BID, ASK = "60000.00", "60000.50"
DONE = {OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED, OrderStatus.EXPIRED, OrderStatus.REPLACED}
LIVE = {OrderStatus.NEW} | DONE


@pytest.fixture(scope="module", autouse=True)
def btc_price(stack):
    return stack.set_quote("BTCUSDT", BID, ASK, BID)


def test_resting_stop_types_parse_and_cancel_all(trader):
    c = trader.client
    stop = c.submit_order(StopOrderRequest(symbol="BTCUSDT", qty=0.01, side=OrderSide.BUY,
                                           time_in_force=TimeInForce.GTC, stop_price=90000.0))
    stop_limit = c.submit_order(StopLimitOrderRequest(symbol="BTCUSDT", qty=0.01, side=OrderSide.BUY,
                                                      time_in_force=TimeInForce.DAY, stop_price=90000.0,
                                                      limit_price=90100.0))
    assert stop.type == OrderType.STOP and Decimal(stop.stop_price) == Decimal("90000")
    assert stop_limit.expires_at is not None, "a day order shows when it expires"
    for o in (stop, stop_limit):
        assert trader.wait_order(o.id, LIVE, "new").status == OrderStatus.NEW
    statuses = c.cancel_orders()
    assert {s.id for s in statuses} >= {stop.id, stop_limit.id}
    assert all(s.status == 200 for s in statuses)
    for o in (stop, stop_limit):
        assert trader.wait_order(o.id, DONE, "canceled").status == OrderStatus.CANCELED


def test_bracket_legs_nest_and_replace_links(trader):
    c = trader.client
    bracket = c.submit_order(MarketOrderRequest(
        symbol="BTCUSDT", qty=0.02, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
        order_class=OrderClass.BRACKET,
        take_profit=TakeProfitRequest(limit_price=70000.0),
        stop_loss=StopLossRequest(stop_price=50000.0, limit_price=49900.0),
    ))
    assert bracket.order_class == OrderClass.BRACKET
    filled = trader.wait_order(bracket.id, DONE, "filled")
    assert filled.status == OrderStatus.FILLED, filled
    assert filled.legs is not None and len(filled.legs) == 2, filled
    assert all(isinstance(leg, Order) for leg in filled.legs)
    tp = next(leg for leg in filled.legs if leg.type == OrderType.LIMIT)
    assert trader.wait_order(tp.id, LIVE, "new").status == OrderStatus.NEW
    nested = c.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL, nested=True))
    assert any(o.id == bracket.id and o.legs for o in nested)

    # Move the take-profit: the replacement takes its place, linked both ways.
    new = c.replace_order_by_id(tp.id, ReplaceOrderRequest(limit_price=71000.0))
    assert str(new.replaces) == str(tp.id)
    assert trader.wait_order(new.id, LIVE, "new").status == OrderStatus.NEW
    old = trader.wait_order(tp.id, DONE, "replaced")
    assert old.status == OrderStatus.REPLACED and str(old.replaced_by) == str(new.id)

    # A trailing stop on the rest of the position is refused: the legs hold all of it.
    with pytest.raises(APIError) as info:
        c.submit_order(TrailingStopOrderRequest(symbol="BTCUSDT", qty=0.01, side=OrderSide.SELL,
                                                time_in_force=TimeInForce.GTC, trail_percent=1.0))
    assert info.value.code == "insufficient_qty", str(info.value)


def test_close_positions(trader):
    c = trader.client
    # The bracket's legs hold the whole position: closing part of it is refused, as Alpaca
    # refuses a sell of quantity held for other orders.
    with pytest.raises(APIError) as info:
        c.close_position("BTCUSDT", ClosePositionRequest(percentage="50"))
    assert info.value.status_code == 422 and info.value.code == "insufficient_qty", str(info.value)
    # Closing everything with its orders canceled first works.
    responses = c.close_all_positions(cancel_orders=True)
    assert [r.symbol for r in responses] == ["BTCUSDT"], responses
    assert all(r.status == 200 for r in responses)
    order = responses[0].body
    assert isinstance(order, Order)
    assert trader.wait_order(order.id, DONE, "filled").status == OrderStatus.FILLED
    assert c.get_all_positions() == []
