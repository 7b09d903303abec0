"""Schemathesis against the OpenAPI document the api serves (`GET /openapi.yaml`), through the
devstack: every operation of the document gets generated requests (its examples, boundary
values of every parameter and body field, then random valid and invalid ones), and every
answer must be documented: no 5xx, a status the operation lists, its content type, its
schema, its headers (`Retry-After` on 429 and 503), and a request the document calls invalid
is refused. So the document has to be complete and true, and no request, however hostile,
may crash a function. The operations are generated from functions/api/openapi.yaml when the
module is collected (one test each); the first test proves the api serves that same file.

Bounded and reproducible: SCHEMATHESIS_MAX_EXAMPLES random examples per operation (default
20) on top of the examples and boundary phases, a fixed seed (SCHEMATHESIS_SEED),
derandomized, no example database; SCHEMATHESIS_SUMMARY=1 (with -s) prints the statuses
seen per operation.

Isolation, so that each operation sees its own effects and nothing it does starves the others
or the rest of the suite:
- every operation runs as its own fresh user (its own account: its own rate buckets, risk
  limits, kill switch, keys and sessions), alternating its login session and its API key
  from one example to the next, so both the trading-key and the session-only answers
  (403 session_required) are exercised;
- every operation sends from its own source address (X-Forwarded-For, which this suite's
  devstack trusts), so sign-up, login and alert fuzzing exhaust only their own per-address
  limits and never the other tests' 127.0.0.1;
- a 429 is checked like any answer, then the operation goes on as a new user from a new
  address, so its remaining examples reach past the limit;
- what an example revokes is renewed before the next one: a logout or logout_all ends the
  session (logged in again), a password change replaces the password and the session (and,
  with revoke_api_keys, the key).
Nothing is excluded: destructive operations (logout_all, the password, the kill switch,
deleting keys, closing everything) only ever touch their own user.

`test_success_answers_conform` then walks the paths that random requests rarely reach (a
filled order, positions, fills, replaces and cancels, legs, closes, webhooks with an accepted
alert, API keys, the kill switch), validating each answer against the same document with the
same checks.
"""

from __future__ import annotations

import itertools
from collections import Counter
import os
import time
import uuid

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from conftest import REPO, WAIT_TIMEOUT_S

MAX_EXAMPLES = int(os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "20"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261207"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    # A request the document calls invalid is refused (4xx): the document is no stricter
    # than the API.
    negative_data_rejection,
]
# The document's example of a password change names this current password, so its
# examples phase changes a password for real (the 200 answer) as well as failing to.
PASSWORD = "correct horse battery staple"
TIMEOUT_S = 30


def _address(block: int, n: int) -> str:
    return f"198.{18 + block}.{n // 250}.{n % 250 + 1}"  # 198.18.0.0/15: for testing


class User:
    """A fresh user with a login session and an API key, from its own source address."""

    _count = itertools.count()

    def __init__(self, stack):
        self.stack = stack
        self.ip = _address(1, next(User._count))
        self.email = f"st-{uuid.uuid4().hex[:16]}@example.com"
        self.password = PASSWORD
        self._call("POST", "/v2/auth/signup", {"email": self.email, "password": self.password}, 202)
        self.login()
        self.new_key()

    def _call(self, method, path, body, expected, headers=None):
        status, answer = self.stack.rest(method, path, body, {"X-Forwarded-For": self.ip, **(headers or {})})
        if status != expected:
            self.stack.fail(f"{method} {path} for a Schemathesis user answered {status}: {answer}")
        return answer

    def login(self):
        body = {"email": self.email, "password": self.password}
        self.token = self._call("POST", "/v2/auth/login", body, 200)["token"]

    def new_key(self):
        key = self._call("POST", "/v2/api_keys", None, 201, self.session)
        self.key = {"APCA-API-KEY-ID": key["key_id"], "APCA-API-SECRET-KEY": key["secret_key"]}

    @property
    def session(self):
        return {"Authorization": f"Bearer {self.token}"}


class Runner:
    """Per operation: its user, its source address and which credential the next example
    uses."""

    def __init__(self, stack, raw_schema):
        self.stack = stack
        self.raw = raw_schema
        self.users: dict[str, User] = {}
        self.addresses: dict[str, str] = {}
        self.examples: dict[str, int] = {}
        self.statuses: dict[str, Counter] = {}
        self._address_count = itertools.count()

    def security(self, case):
        op = self.raw["paths"][case.operation.path][case.operation.method.lower()]
        return op.get("security", self.raw.get("security", []))

    def headers(self, case) -> dict:
        label = case.operation.label
        if label not in self.addresses:
            self.addresses[label] = _address(0, next(self._address_count))
        ip = self.addresses[label]
        n = self.examples.get(label, 0)
        self.examples[label] = n + 1
        headers = {"X-Forwarded-For": ip}
        if self.security(case):
            user = self.user(label)
            headers.update(user.session if n % 2 == 0 else user.key)
        return headers

    def user(self, label) -> User:
        if label not in self.users:
            self.users[label] = User(self.stack)
        return self.users[label]

    def after(self, case, response):
        """Renews what the example revoked; after a 429 (the account's, or the address's,
        bucket is empty: the answer was checked), the operation goes on as a new user from a
        new address, so that the rest of its examples reach past the limit."""
        label = case.operation.label
        self.statuses.setdefault(label, Counter())[response.status_code] += 1
        if response.status_code == 429:
            self.users.pop(label, None)
            self.addresses[label] = _address(0, next(self._address_count))
            return
        user = self.users.get(label)
        if user is None or response.status_code >= 300:
            return
        if label in ("POST /v2/auth/logout", "POST /v2/auth/logout_all"):
            user.login()
        elif label == "POST /v2/auth/password":
            answer = response.json()
            user.password = case.body["new_password"]
            user.token = answer["session"]["token"]
            if answer["api_keys_revoked"]:
                user.new_key()


DOCUMENT = REPO / "functions" / "api" / "openapi.yaml"
schema = schemathesis.openapi.from_path(
    str(DOCUMENT),
    config=schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "suppress-health-check": ["all"],
            "request-timeout": TIMEOUT_S,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # Credentials are the runner's: generated ones would only mask them.
                "with-security-parameters": False,
            },
            "phases": {"stateful": {"enabled": False}},
        }
    ),
)


def test_the_served_document_is_the_one_tested(stack):
    """The operations below are generated from functions/api/openapi.yaml when the module is
    collected (one test per operation); the api serves that same file (include_str!), so
    this proves the answers are checked against the served document."""
    status, served = stack.rest("GET", "/openapi.yaml")
    assert status == 200
    assert served == DOCUMENT.read_text(), (
        "the api serves another /openapi.yaml than functions/api/openapi.yaml: rebuild the "
        "binaries (cargo build --workspace --bins)"
    )


@pytest.fixture(scope="module")
def runner(stack):
    r = Runner(stack, schema.raw_schema)
    yield r
    if os.environ.get("SCHEMATHESIS_SUMMARY"):
        total = sum(sum(c.values()) for c in r.statuses.values())
        print(f"\n{len(r.statuses)} operations, {total} requests")
        for label, c in sorted(r.statuses.items()):
            print(f"  {label}: {dict(sorted(c.items()))}")


@schema.parametrize()
def test_every_answer_conforms(case, runner, stack):
    headers = runner.headers(case)
    if case.method.upper() != case.operation.method.upper():
        # The boundary phase also tries methods the path does not have: no route (the api's
        # 404, or API Gateway's 403 for the webhook function's POST-only resource), never a
        # crash. OPTIONS is every api path's (the CORS preflight the api answers itself):
        # 204 without an Origin, 403 for an origin not allowed.
        response = case.call(base_url=stack.rest_url, headers=headers, timeout=TIMEOUT_S)
        if case.method.upper() == "OPTIONS":
            ok = response.status_code in (204, 403)
        else:
            ok = 400 <= response.status_code < 500
        assert ok, (case.method, case.formatted_path, response.status_code, response.text)
        runner.statuses.setdefault("(methods a path does not have)", Counter())[response.status_code] += 1
        return
    response = case.call_and_validate(base_url=stack.rest_url, headers=headers, checks=CHECKS, timeout=TIMEOUT_S)
    runner.after(case, response)


# ------------------------------------------------------------------- success paths ---


class Conform:
    """Explicit requests, each answer validated against the document with CHECKS."""

    def __init__(self, stack, user):
        self.stack = stack
        self.user = user

    def __call__(self, method, path, expected, *, params=None, query=None, body=None, auth="key"):
        kwargs = {"path_parameters": params or {}, "query": query or {}}
        if body is not None:
            kwargs["body"] = body
            kwargs["media_type"] = "application/json"
        case = schema[path][method].Case(**kwargs)
        headers = {"X-Forwarded-For": self.user.ip}
        headers.update({"key": self.user.key, "session": self.user.session, "none": {}}[auth])
        response = case.call(base_url=self.stack.rest_url, headers=headers, timeout=TIMEOUT_S)
        assert response.status_code == expected, (method, path, response.status_code, response.text)
        case.validate_response(response, checks=CHECKS)
        return response.json() if response.content else None

    def order(self, order_id, statuses):
        """Polls the order (each answer validated) until its status is one of `statuses`."""
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            order = self("GET", "/v2/orders/{order_id}", 200, params={"order_id": order_id})
            if order["status"] in statuses:
                return order
            if time.monotonic() > deadline:
                self.stack.fail(f"order {order_id} never became {statuses}; last: {order}")
            time.sleep(0.2)


def test_success_answers_conform(stack):
    """The answers random requests rarely reach (fills, positions, replaces, legs, webhooks and
    an accepted alert, API keys, the kill switch), each validated against the document."""
    user = User(stack)
    call = Conform(stack, user)
    stack.set_quote("BTCUSDT", "60000", "60000.5")

    # A filled market buy: the order, its fill, the position, the account.
    buy = call("POST", "/v2/orders", 200, body={"symbol": "BTCUSDT", "qty": "0.003", "side": "buy", "type": "market", "time_in_force": "gtc", "client_order_id": "st-buy"})
    filled = call.order(buy["id"], {"filled"})
    assert filled["filled_avg_price"] == "60000.5", filled
    call("GET", "/v2/orders:by_client_order_id", 200, query={"client_order_id": "st-buy"})
    call("GET", "/v2/orders", 200, query={"status": "all", "direction": "asc"})
    assert len(call("GET", "/v2/positions", 200)) == 1
    call("GET", "/v2/positions/{symbol}", 200, params={"symbol": "BTCUSDT"})
    call("GET", "/v2/positions/{base}/{quote}", 200, params={"base": "BTC", "quote": "USDT"})
    assert call("GET", "/v2/account/activities/{activity_type}", 200, params={"activity_type": "FILL"})
    assert call("GET", "/v2/account/activities", 200, query={"activity_types": "FILL", "direction": "asc"})
    account = call("GET", "/v2/account", 200)
    assert account["long_market_value"] != "0", account

    # A resting limit, replaced, then canceled; a bracket whose legs are held; cancel all.
    limit = call("POST", "/v2/orders", 200, body={"symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "limit", "limit_price": "30000", "time_in_force": "gtc"})
    call.order(limit["id"], {"new"})
    replacement = call("PATCH", "/v2/orders/{order_id}", 200, params={"order_id": limit["id"]}, body={"limit_price": "31000"})
    call.order(replacement["id"], {"new"})
    assert call.order(limit["id"], {"replaced"})["replaced_by"] == replacement["id"]
    call("DELETE", "/v2/orders/{order_id}", 204, params={"order_id": replacement["id"]})
    call.order(replacement["id"], {"canceled"})
    bracket = call("POST", "/v2/orders", 200, body={"symbol": "BTCUSDT", "qty": "0.001", "side": "buy", "type": "limit", "limit_price": "30000", "time_in_force": "gtc", "order_class": "bracket", "take_profit": {"limit_price": "70000"}, "stop_loss": {"stop_price": "29000"}})
    assert len(call.order(bracket["id"], {"new"})["legs"]) == 2
    call("GET", "/v2/orders", 200, query={"status": "open", "nested": "true"})
    canceled = call("DELETE", "/v2/orders", 207)
    assert [c["id"] for c in canceled] == [bracket["id"]], canceled
    call.order(bracket["id"], {"canceled"})

    # Closing: a share of the position, then the rest.
    close = call("DELETE", "/v2/positions/{symbol}", 200, params={"symbol": "BTCUSDT"}, query={"percentage": "50"})
    call.order(close["id"], {"filled"})
    closes = call("DELETE", "/v2/positions", 207, query={"cancel_orders": "true"})
    assert [c["status"] for c in closes] == [200], closes
    call.order(closes[0]["order_id"], {"filled"})

    # Risk limits and the kill switch.
    call("GET", "/v2/account/risk", 200)
    call("PATCH", "/v2/account/risk", 200, body={"max_order_notional": "50000"})
    assert call("POST", "/v2/account/kill", 200, body={"reason": "schemathesis"})["kill_switch"]["active"]
    assert not call("DELETE", "/v2/account/kill", 200, auth="session")["kill_switch"]["active"]

    # A webhook, an accepted alert and one already at its target, the deliveries.
    hook = call("POST", "/v2/webhooks", 201, body={"name": "st", "allowed_ips": None}, auth="session")
    call("GET", "/v2/webhooks", 200)
    alert = {"passphrase": hook["passphrase"], "symbol": "BINANCE:BTCUSDT", "action": "buy", "qty": "0.001", "id": "st-alert"}
    assert call("POST", "/v2/hooks/tradingview/{webhook_id}", 200, params={"webhook_id": hook["id"]}, body=alert, auth="none")["status"] == "accepted"
    flat = {"passphrase": hook["passphrase"], "symbol": "ETHUSDT", "position_size": "0", "id": "st-flat"}
    assert call("POST", "/v2/hooks/tradingview/{webhook_id}", 200, params={"webhook_id": hook["id"]}, body=flat, auth="none")["status"] == "no_change"
    assert len(call("GET", "/v2/webhooks/{webhook_id}/deliveries", 200, params={"webhook_id": hook["id"]})) == 2
    call("POST", "/v2/webhooks/{webhook_id}/rotate", 200, params={"webhook_id": hook["id"]}, auth="session")
    call("DELETE", "/v2/webhooks/{webhook_id}", 204, params={"webhook_id": hook["id"]})

    # API keys and sessions.
    key = call("POST", "/v2/api_keys", 201, auth="session")
    assert len(call("GET", "/v2/api_keys", 200, auth="session")) == 2
    call("DELETE", "/v2/api_keys/{key_id}", 204, params={"key_id": key["key_id"]}, auth="session")
    changed = call("POST", "/v2/auth/password", 200, body={"current_password": user.password, "new_password": "another horse battery staple", "revoke_api_keys": True}, auth="session")
    assert len(changed["api_keys_revoked"]) == 1, changed
    user.token = changed["session"]["token"]
    assert call("POST", "/v2/auth/logout_all", 200, auth="session")["sessions_revoked"] == 1
    call("POST", "/v2/auth/logout", 401, auth="session")  # that session has ended
