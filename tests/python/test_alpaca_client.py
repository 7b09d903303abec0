"""alpaca-py, the reference client, against our Alpaca-compatible REST API.

Every call below goes through alpaca-py's own models (pydantic): a response that does not
parse fails the test with the field and the route. Orders are sent as alpaca-py sends them,
with JSON numbers (`"qty": 0.01`), which the server must parse exactly.
"""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from alpaca.common.exceptions import APIError
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import (
    AssetClass,
    OrderSide,
    OrderStatus,
    OrderType,
    PositionSide,
    QueryOrderStatus,
    TimeInForce,
)
from alpaca.trading.models import Asset, Clock, Order, Position, TradeAccount, TradeActivity
from alpaca.trading.requests import (
    GetAssetsRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
)

BID, ASK, LAST = "60000.00", "60000.50", "60000.25"
QTY = 0.01  # a float on purpose: alpaca-py sends it as the JSON number 0.01


# ---------------------------------------------------------------------------- fixtures ---


@pytest.fixture(scope="module", autouse=True)
def btc_price(stack):
    """BTCUSDT scripted on the feed, and through ingest in Redis, before any test here."""
    return stack.set_quote("BTCUSDT", BID, ASK, LAST)


@pytest.fixture(scope="module")
def filled_buy(trader):
    """A market buy of 0.01 BTCUSDT, as alpaca-py submits it, polled until filled."""
    coid = f"py-buy-{uuid.uuid4().hex[:12]}"
    # The account before any order: the initial cash, exactly.
    account = trader.client.get_account()
    assert isinstance(account, TradeAccount)
    assert account.cash == "100000", account
    order = trader.client.submit_order(
        MarketOrderRequest(
            symbol="BTCUSDT",
            qty=QTY,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            client_order_id=coid,
        )
    )
    assert isinstance(order, Order)
    assert order.status == OrderStatus.PENDING_NEW, order
    assert order.client_order_id == coid
    assert order.symbol == "BTCUSDT"
    # Parsed exactly from the JSON number 0.01: not 0.01000000000000000020816681711721685...
    assert order.qty == "0.01", order.qty
    filled = trader.wait_order(order.id, {OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED}, "filled")
    assert filled.status == OrderStatus.FILLED, filled
    return filled


# ------------------------------------------------------------------------------- tests ---


def test_account_parses(trader):
    account = trader.client.get_account()
    assert isinstance(account, TradeAccount)
    assert account.currency == "USDT"
    # Amounts are JSON strings, as Alpaca sends them.
    assert isinstance(account.cash, str)
    assert Decimal(account.equity) >= 0
    assert account.trading_blocked is False


def test_market_buy_fills_at_the_ask(trader, filled_buy):
    o = filled_buy
    assert o.filled_avg_price == "60000.5"
    assert o.filled_qty == "0.01"
    assert o.qty == "0.01"
    assert o.side == OrderSide.BUY
    assert o.type == OrderType.MARKET and o.order_type == OrderType.MARKET
    assert o.time_in_force == TimeInForce.GTC
    assert o.asset_class == AssetClass.CRYPTO
    assert o.filled_at is not None


def test_order_by_client_id_and_list(trader, filled_buy):
    by_coid = trader.client.get_order_by_client_id(filled_buy.client_order_id)
    assert isinstance(by_coid, Order)
    assert by_coid.id == filled_buy.id
    assert by_coid.status == OrderStatus.FILLED

    orders = trader.client.get_orders(GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert all(isinstance(o, Order) for o in orders)
    assert filled_buy.id in {o.id for o in orders}

    closed = trader.client.get_orders(GetOrdersRequest(status=QueryOrderStatus.CLOSED, symbols=["BTCUSDT"]))
    assert filled_buy.id in {o.id for o in closed}


def test_positions_parse(trader, filled_buy):
    positions = trader.client.get_all_positions()
    assert all(isinstance(p, Position) for p in positions)
    assert [p.symbol for p in positions] == ["BTCUSDT"]

    p = trader.client.get_open_position("BTCUSDT")
    assert isinstance(p, Position)
    assert p.qty == "0.01"
    assert p.avg_entry_price == "60000.5"
    assert p.side == PositionSide.LONG
    assert p.asset_class == AssetClass.CRYPTO
    assert Decimal(p.cost_basis) == Decimal("600.005")
    # Marked at the bid (what a long could be sold at now): 0.01 x 60000.00. The feed
    # re-emits the scripted quote every second, so the price is fresh.
    assert p.current_price is not None and Decimal(p.current_price) == Decimal(BID), p
    assert Decimal(p.market_value) == Decimal("600")
    assert Decimal(p.unrealized_pl) == Decimal("-0.005")
    assert p.qty_available == "0.01"

    # alpaca-py's crypto spelling: /v2/positions/BTC/USDT.
    slash = trader.client.get_open_position("BTC/USDT")
    assert isinstance(slash, Position) and slash.symbol == "BTCUSDT" and slash.qty == "0.01"


def test_account_after_fill(trader, filled_buy):
    status, fills = trader.stack.rest("GET", "/v2/account/activities/FILL", headers=trader.key_headers)
    assert status == 200, fills
    fee = sum(Decimal(f["fee"]) for f in fills if f["order_id"] == str(filled_buy.id))
    account = trader.client.get_account()
    assert isinstance(account, TradeAccount)
    # cash = initial cash - signed fill notional - fees
    assert Decimal(account.cash) == Decimal("100000") - Decimal("0.01") * Decimal("60000.5") - fee


def test_fill_activities(trader, filled_buy):
    """alpaca-py 0.44 has no TradingClient method for activities: the REST route, parsed
    with alpaca-py's own TradeActivity model."""
    for path in ("/v2/account/activities/FILL", "/v2/account/activities?activity_types=FILL"):
        status, body = trader.stack.rest("GET", path, headers=trader.key_headers)
        assert status == 200, f"GET {path}: {status} {body}"
        assert isinstance(body, list) and body, f"GET {path}: {body}"
        activities = [TradeActivity(**a) for a in body]
        mine = [a for a in activities if a.order_id == filled_buy.id]
        assert len(mine) == 1, body
        a = mine[0]
        assert a.activity_type.value == "FILL"
        assert a.symbol == "BTCUSDT"
        assert a.side == OrderSide.BUY
        assert a.order_status == OrderStatus.FILLED
        assert a.type.value == "fill"
        raw = next(x for x in body if x["order_id"] == str(filled_buy.id))
        # Amounts are strings, exact.
        assert raw["price"] == "60000.5" and raw["qty"] == "0.01" and raw["leaves_qty"] == "0"
        assert "::" in raw["id"]


def test_assets_and_clock(trader):
    a = trader.client.get_asset("BTCUSDT")
    assert isinstance(a, Asset)
    assert a.symbol == "BTCUSDT"
    assert trader.client.get_asset("BTC/USDT").id == a.id
    assert a.asset_class == AssetClass.CRYPTO
    assert a.tradable is True
    assert a.min_trade_increment is not None and a.min_trade_increment > 0

    assets = trader.client.get_all_assets(GetAssetsRequest(asset_class=AssetClass.CRYPTO))
    assert all(isinstance(x, Asset) for x in assets)
    symbols = {x.symbol for x in assets}
    assert {"BTCUSDT", "ETHUSDT"} <= symbols

    clock = trader.client.get_clock()
    assert isinstance(clock, Clock)
    assert clock.is_open is True


def test_limit_order_rests_then_cancels(trader, filled_buy):
    coid = f"py-limit-{uuid.uuid4().hex[:12]}"
    order = trader.client.submit_order(
        LimitOrderRequest(
            symbol="BTCUSDT",
            qty=QTY,
            side=OrderSide.BUY,
            time_in_force=TimeInForce.GTC,
            limit_price=50000.0,  # far below the ask: it must rest
            client_order_id=coid,
        )
    )
    assert isinstance(order, Order)
    assert order.status == OrderStatus.PENDING_NEW, order
    assert order.type == OrderType.LIMIT
    assert Decimal(order.limit_price) == Decimal("50000")

    resting = trader.wait_order(order.id, {OrderStatus.NEW, OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED}, "new")
    assert resting.status == OrderStatus.NEW, resting
    open_orders = trader.client.get_orders(GetOrdersRequest(status=QueryOrderStatus.OPEN))
    assert order.id in {o.id for o in open_orders}

    assert trader.client.cancel_order_by_id(order.id) is None
    canceled = trader.wait_order(order.id, {OrderStatus.CANCELED, OrderStatus.FILLED, OrderStatus.REJECTED}, "canceled")
    assert canceled.status == OrderStatus.CANCELED, canceled
    assert canceled.canceled_at is not None
    assert canceled.filled_qty == "0"


def test_lot_size_violation_is_a_422_api_error(trader):
    with pytest.raises(APIError) as info:
        trader.client.submit_order(
            MarketOrderRequest(symbol="BTCUSDT", qty=0.000015, side=OrderSide.BUY, time_in_force=TimeInForce.GTC)
        )
    e = info.value
    assert e.status_code == 422, str(e)
    assert e.code == "LOT_SIZE", str(e)
    assert e.message


def test_unknown_order_is_a_404_api_error(trader):
    with pytest.raises(APIError) as info:
        trader.client.get_order_by_id(str(uuid.uuid4()))
    assert info.value.status_code == 404, str(info.value)


def test_bad_api_key_is_a_401_api_error(stack):
    client = TradingClient("PKNOTAKEY", "not-a-secret", paper=True, url_override=stack.rest_url)
    with pytest.raises(APIError) as info:
        client.get_account()
    assert info.value.status_code == 401, str(info.value)


def test_market_sell_closes_the_position(trader, filled_buy):
    """Last, since it closes the position the tests above read: a sell fills at the bid."""
    order = trader.client.submit_order(
        MarketOrderRequest(symbol="BTCUSDT", qty=QTY, side=OrderSide.SELL, time_in_force=TimeInForce.GTC)
    )
    assert isinstance(order, Order) and order.status == OrderStatus.PENDING_NEW, order
    filled = trader.wait_order(order.id, {OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.CANCELED}, "filled")
    assert filled.status == OrderStatus.FILLED, filled
    assert filled.filled_avg_price == "60000"
    assert filled.side == OrderSide.SELL
    with pytest.raises(APIError) as info:
        trader.client.get_open_position("BTCUSDT")
    assert info.value.status_code == 404, str(info.value)
    assert trader.client.get_all_positions() == []
