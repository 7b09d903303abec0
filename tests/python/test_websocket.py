"""The WebSocket API from Python's `websockets` client, as a script-writing trader would use it:
connect with an API key in the query, subscribe, receive the snapshot and live prices,
trade over REST (alpaca-py) and receive the order update and the PnL on the socket."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.parse
from decimal import Decimal

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conftest import WAIT_TIMEOUT_S


async def next_of(ws, kind: str, pred=lambda m: True) -> dict:
    """The next message of `type` kind that satisfies pred (other messages are skipped)."""
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    seen = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            pytest.fail(f"no {kind} message within {WAIT_TIMEOUT_S} s; saw {seen[-10:]}")
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout=left)
        except asyncio.TimeoutError:
            continue
        msg = json.loads(raw)
        assert isinstance(msg.get("ts"), int) and msg["ts"] > 0, msg
        seen.append(msg)
        if msg.get("type") == kind and pred(msg):
            return msg


def url(stack, **query) -> str:
    return f"{stack.ws_url}/?{urllib.parse.urlencode(query)}"


def test_websocket_client_refused_without_credentials(stack):
    async def run():
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(stack)):
                pass
        assert refused.value.response.status_code == 401
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url(stack, token="not-a-session")):
                pass
        assert refused.value.response.status_code == 401

    asyncio.run(run())


def test_websocket_prices_orders_and_pnl(stack, trader):
    from alpaca.trading.enums import OrderSide, TimeInForce
    from alpaca.trading.requests import MarketOrderRequest

    stack.set_quote("BTCUSDT", "60000", "60000.5")

    async def run():
        async with connect(url(stack, key_id=trader.key_id, secret_key=trader.secret)) as ws:
            await ws.send(json.dumps({"action": "subscribe", "symbols": ["BTCUSDT"], "max_rate_ms": 100}))
            snap = await next_of(ws, "snapshot")
            assert snap["symbols"] == ["BTCUSDT"] and snap["max_rate_ms"] == 100
            assert [p["symbol"] for p in snap["prices"]] == ["BTCUSDT"]

            # A new price reaches the socket.
            await asyncio.to_thread(stack.set_quote, "BTCUSDT", "60100", "60100.5")
            prices = await next_of(
                ws, "prices", lambda m: any(p["symbol"] == "BTCUSDT" and Decimal(p["bid"]) == Decimal("60100") for p in m["prices"])
            )
            assert all(isinstance(p["bid"], str) for p in prices["prices"]), "amounts are strings"

            # A fill through alpaca-py comes back as an order update and a PnL.
            order = await asyncio.to_thread(
                trader.client.submit_order,
                MarketOrderRequest(symbol="BTCUSDT", qty=0.001, side=OrderSide.BUY, time_in_force=TimeInForce.GTC),
            )

            def has_btc_position(m):
                pnl = m.get("pnl") or {}
                return any(p["symbol"] == "BTCUSDT" and Decimal(p["qty"]) == Decimal("0.001") for p in pnl.get("positions", []))

            # The fill comes as an order update (from the executor) and the PnL with the new
            # position (from the fan-out, riding on a `prices` message when a subscribed
            # price moved in the same flush, else alone as `pnl`): two paths, either first.
            fill, m = None, None
            deadline = time.monotonic() + WAIT_TIMEOUT_S
            while fill is None or m is None:
                left = deadline - time.monotonic()
                assert left > 0, f"fill seen: {fill is not None}, PnL with the position seen: {m is not None}"
                try:
                    got = json.loads(await asyncio.wait_for(ws.recv(), timeout=left))
                except asyncio.TimeoutError:
                    continue
                if got["type"] == "order" and got["data"]["event"] == "fill":
                    fill = got
                elif got["type"] in ("pnl", "prices") and has_btc_position(got):
                    m = got
            assert fill["data"]["order"]["id"] == str(order.id)
            assert Decimal(fill["data"]["qty"]) == Decimal("0.001")
            assert Decimal(fill["data"]["position_qty"]) == Decimal("0.001")
            assert Decimal(m["pnl"]["cash"]) < Decimal("100000")

            await ws.send(json.dumps({"action": "ping"}))
            await next_of(ws, "pong")
            await ws.send("not json")
            err = await next_of(ws, "error")
            assert err["code"] == "malformed_message"

    asyncio.run(run())
