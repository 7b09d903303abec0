"""End-to-end fixtures for the Python suite: a whole system started from the built binaries.

The session fixture `stack` starts, from `$TRADING_BIN_DIR` (default `<repo>/target/debug`):

- `feed`     the Binance-protocol replay server, on a free port (its `POST /quotes` scripts prices);
- `ingest`   following the feed, writing prices to Redis under a unique `KEY_PREFIX`;
- `devstack` API Gateway REST + Lambda runtime for the `api` and `executor` binaries, the
             SQS event source polling a unique FIFO queue created here in moto, and API Gateway
             WebSocket (+ `@connections`) for the `ws` binary, with a connection table of its
             own in moto (built from template.yaml by infra/scripts/aws_setup.py).

It needs the services of `make test` (infra/scripts/services.sh): DATABASE_URL, REDIS_URL,
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. A missing variable or
binary fails the suite with a clear message; it never skips. Every process logs to a file in
a temporary directory; a failing test shows the last lines of each log.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
REQUIRED_ENV = (
    "DATABASE_URL",
    # Each function's own database role, as on AWS (infra/migrations/0004_function_roles.sql).
    "DATABASE_API_URL",
    "DATABASE_EXECUTOR_URL",
    "DATABASE_INGEST_URL",
    "REDIS_URL",
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
)
BINARIES = ("feed", "ingest", "devstack", "api", "executor", "ws", "webhook")
SYMBOLS = "BTCUSDT,ETHUSDT"
# Generous: moto is slow, and debug binaries start slowly on a busy machine.
START_TIMEOUT_S = float(os.environ.get("PY_E2E_START_TIMEOUT_S", "90"))
WAIT_TIMEOUT_S = float(os.environ.get("PY_E2E_WAIT_TIMEOUT_S", "30"))
LOG_TAIL_LINES = 40

# The running stack, for the failure report hook below.
_STACK: "Stack | None" = None
# Whether any test failed (the logs are then kept).
_FAILED = False


# ---------------------------------------------------------------------------- helpers ---


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method: str, url: str, body=None, headers=None, timeout: float = 30.0):
    """One HTTP request with urllib: returns (status, parsed JSON or text or None)."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body).encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    if not raw:
        return status, None
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def redis_get(redis_url: str, key: str, timeout: float = 5.0):
    """GET one key with a minimal RESP client (the venv has no redis package)."""
    u = urllib.parse.urlparse(redis_url)
    host, port = u.hostname or "127.0.0.1", u.port or 6379
    db = (u.path or "/").strip("/") or "0"
    cmds = []
    if u.password:
        cmds.append(["AUTH", u.username, u.password] if u.username else ["AUTH", u.password])
    cmds.append(["SELECT", db])
    cmds.append(["GET", key])
    payload = b"".join(
        b"*%d\r\n" % len(c) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in c) for c in cmds
    )
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(payload)
        f = s.makefile("rb")
        reply = None
        for _ in cmds:
            line = f.readline()
            if not line:
                raise ConnectionError("redis closed the connection")
            kind, rest = line[:1], line[1:].rstrip(b"\r\n")
            if kind == b"-":
                raise RuntimeError(f"redis error: {rest.decode()}")
            if kind == b"$":
                n = int(rest)
                reply = None if n < 0 else f.read(n + 2)[:-2].decode()
            else:
                reply = rest.decode()
        return reply


def _tail(path: Path, n: int = LOG_TAIL_LINES) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError as e:
        return f"(cannot read {path}: {e})"
    return "\n".join(lines[-n:])


# ------------------------------------------------------------------------------ stack ---


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log: Path


@dataclass
class Stack:
    bin_dir: Path
    env: dict
    prefix: str
    log_dir: Path
    queue_url: str = ""
    feed_url: str = ""
    rest_url: str = ""
    ws_url: str = ""
    connections_table: str = ""
    procs: list = field(default_factory=list)

    def __repr__(self):  # not the dataclass one: `env` may hold credentials
        return f"Stack(rest_url={self.rest_url!r}, ws_url={self.ws_url!r}, feed_url={self.feed_url!r}, prefix={self.prefix!r}, logs={str(self.log_dir)!r})"

    # -- processes --

    def spawn(self, name: str, args: list, env: dict) -> Proc:
        log = self.log_dir / f"{name}.log"
        f = open(log, "wb")
        try:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(REPO),
                # Its own process group: stopping it stops whatever it started.
                start_new_session=True,
            )
        finally:
            f.close()
        p = Proc(name, popen, log)
        self.procs.append(p)
        return p

    def logs(self) -> str:
        parts = [f"logs in {self.log_dir}"]
        for p in self.procs:
            rc = p.popen.poll()
            state = "running" if rc is None else f"exited with {rc}"
            parts.append(f"---- {p.name} ({state}), last lines of {p.log} ----\n{_tail(p.log)}")
        return "\n".join(parts)

    def fail(self, message: str):
        pytest.fail(f"{message}\n{self.logs()}", pytrace=False)

    def check_alive(self):
        for p in self.procs:
            rc = p.popen.poll()
            if rc is not None:
                self.fail(f"{p.name} exited with status {rc}")

    def stop(self):
        # Gracefully first (the devstack stops its function processes), then the groups.
        for p in reversed(self.procs):
            if p.popen.poll() is None:
                try:
                    p.popen.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for p in self.procs:
            try:
                p.popen.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for p in self.procs:
            try:
                os.killpg(p.popen.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
            if p.popen.poll() is None:
                p.popen.kill()
            try:
                p.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass

    def spawn_listening(self, name: str, make_args, env: dict, ready) -> tuple[int, Proc]:
        """Spawns a server on a free port, retrying on a lost race for the port, and waits
        until `ready(port, proc)` returns a truthy value."""
        for _attempt in range(5):
            port = free_port()
            proc = self.spawn(name, make_args(port), env)
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                rc = proc.popen.poll()
                if rc is not None:
                    text = proc.log.read_text(errors="replace")
                    if "in use" in text.lower():
                        self.procs.remove(proc)
                        break
                    self.fail(f"{name} exited with status {rc} while starting")
                try:
                    if ready(port, proc):
                        return port, proc
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    self.fail(f"{name} was not ready within {START_TIMEOUT_S:.0f} s")
                time.sleep(0.1)
        self.fail(f"{name} could not bind a free port in 5 attempts")

    # -- prices --

    def set_quote(self, symbol: str, bid: str, ask: str, last: str | None = None) -> dict:
        """Scripts a quote on the feed and waits until ingest has written exactly it,
        received after the script was set, to this stack's Redis."""
        since_ms = int(time.time() * 1000) - 5  # clocks are the same machine's
        body = {"symbol": symbol, "bid": bid, "ask": ask}
        if last is not None:
            body["last"] = last
        status, answer = http("POST", f"{self.feed_url}/quotes", body)
        if status != 200:
            self.fail(f"POST /quotes {body} on the feed answered {status}: {answer}")
        key = f"{self.prefix}px:{symbol}"
        deadline = time.monotonic() + WAIT_TIMEOUT_S
        seen = None
        while True:
            raw = redis_get(self.env["REDIS_URL"], key)
            if raw:
                q = json.loads(raw)
                seen = q
                if Decimal(q["bid"]) == Decimal(bid) and Decimal(q["ask"]) == Decimal(ask) and q.get("ts", 0) >= since_ms:
                    return q
            if time.monotonic() > deadline:
                self.fail(f"quote {symbol} {bid}/{ask} never reached Redis key {key}; last seen: {seen}")
            self.check_alive()
            time.sleep(0.05)

    # -- REST --

    def rest(self, method: str, path: str, body=None, headers=None):
        return http(method, f"{self.rest_url}{path}", body, headers)


def _service_env() -> dict:
    missing = [v for v in REQUIRED_ENV if not os.environ.get(v)]
    if missing:
        pytest.fail(
            "the Python end-to-end suite needs the test services' environment; missing: "
            + ", ".join(missing)
            + ". Run it through `make test`, or: eval \"$(infra/scripts/services.sh env test)\"",
            pytrace=False,
        )
    return {v: os.environ[v] for v in REQUIRED_ENV}


def _bin_dir() -> Path:
    d = Path(os.environ.get("TRADING_BIN_DIR") or REPO / "target" / "debug")
    missing = [b for b in BINARIES if not (d / b).is_file() or not os.access(d / b, os.X_OK)]
    if missing:
        pytest.fail(
            f"binaries missing in TRADING_BIN_DIR={d}: {', '.join(missing)} "
            "(build them with `cargo build --workspace --bins`, or set TRADING_BIN_DIR)",
            pytrace=False,
        )
    return d


def _migrate(bin_dir: Path, env: dict, log_dir: Path):
    """Applies the migrations if the `migrate` binary is there (`make test` has done it too)."""
    exe = bin_dir / "migrate"
    if not exe.is_file():
        return
    log = log_dir / "migrate.log"
    with open(log, "wb") as f:
        rc = subprocess.run([str(exe)], env=env, stdout=f, stderr=subprocess.STDOUT, timeout=120).returncode
    if rc != 0:
        pytest.fail(f"migrate exited with status {rc}:\n{_tail(log)}", pytrace=False)


@pytest.fixture(scope="session")
def stack():
    global _STACK, _FAILED
    services = _service_env()
    bin_dir = _bin_dir()
    import boto3  # after the env check, so a missing venv package is the only other failure

    uid = uuid.uuid4().hex
    prefix = f"py{uid[:12]}:"
    log_dir = Path(tempfile.mkdtemp(prefix=f"py-e2e-{uid[:8]}-"))
    base_env = dict(os.environ)
    base_env.update(services)
    base_env.setdefault("RUST_BACKTRACE", "1")
    base_env.setdefault("NO_COLOR", "1")  # plain logs (tracing-subscriber honours NO_COLOR)

    _migrate(bin_dir, base_env, log_dir)

    sqs = boto3.client(
        "sqs",
        endpoint_url=services["AWS_ENDPOINT_URL"],
        region_name=services["AWS_REGION"],
        aws_access_key_id=services["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=services["AWS_SECRET_ACCESS_KEY"],
    )
    try:
        queue_url = sqs.create_queue(
            QueueName=f"py-e2e-{uid}.fifo",
            Attributes={"FifoQueue": "true", "ContentBasedDeduplication": "false"},
        )["QueueUrl"]
    except Exception as e:  # noqa: BLE001 - any failure here means moto is not usable
        pytest.fail(f"creating the SQS FIFO queue in moto at {services['AWS_ENDPOINT_URL']} failed: {e!r}", pytrace=False)

    table = f"py-e2e-{uid[:12]}-connections"
    rc = subprocess.run(
        [os.environ.get("PYTHON", "python3"), str(REPO / "infra" / "scripts" / "aws_setup.py"), "table", services["AWS_ENDPOINT_URL"], table],
        env=base_env,
        timeout=60,
    ).returncode
    if rc != 0:
        pytest.fail(f"creating the connection table {table} in moto failed (status {rc})", pytrace=False)

    st = Stack(bin_dir=bin_dir, env=base_env, prefix=prefix, log_dir=log_dir, queue_url=queue_url, connections_table=table)
    _STACK = st
    try:
        # The feed, then the devstack, then ingest (it pushes to the devstack's @connections).
        feed_port, _ = st.spawn_listening(
            "feed",
            lambda port: [str(bin_dir / "feed"), "--listen", f"127.0.0.1:{port}", "--speed", "1"],
            base_env,
            lambda port, _p: http("GET", f"http://127.0.0.1:{port}/health", timeout=5)[0] == 200,
        )
        st.feed_url = f"http://127.0.0.1:{feed_port}"

        dev_env = dict(base_env)
        dev_env.update(
            KEY_PREFIX=prefix,
            COMMANDS_QUEUE_URL=queue_url,
            CONNECTIONS_TABLE=table,
            DATABASE_MAX_CONNECTIONS="3",
            DEVSTACK_API_DATABASE_URL=services["DATABASE_API_URL"],
            DEVSTACK_EXECUTOR_DATABASE_URL=services["DATABASE_EXECUTOR_URL"],
        )
        ws_ports = {}

        def devstack_ready(port, proc):
            # It prints its URL once listening; then the API's own health check (through
            # the api Lambda to Postgres, Redis and the queue) must answer 200.
            text = proc.log.read_text(errors="replace")
            marker = "devstack: REST API on "
            if marker not in text:
                return False
            url = text.split(marker, 1)[1].split()[0].rstrip("/")
            if http("GET", f"{url}/health", timeout=10)[0] != 200:
                return False
            st.rest_url = url
            st.ws_url = f"ws://127.0.0.1:{ws_ports['ws']}"
            return True

        def devstack_args(port):
            ws_ports["ws"] = free_port()
            return [
                str(bin_dir / "devstack"),
                "--rest-listen", f"127.0.0.1:{port}",
                "--ws-listen", f"127.0.0.1:{ws_ports['ws']}",
                "--ws-bin", str(bin_dir / "ws"),
                "--api-bin", str(bin_dir / "api"),
                "--webhook-bin", str(bin_dir / "webhook"),
                "--executor-bin", str(bin_dir / "executor"),
                "--queue-url", queue_url,
                "--visibility-timeout-secs", "2",
                # sourceIp from X-Forwarded-For when a test sends one (test_schemathesis.py
                # gives each operation its own address, so that the per-address limits of
                # sign-up, login and alerts are exercised without starving the other tests,
                # which send none and stay 127.0.0.1).
                "--trust-forwarded-for",
            ]

        st.spawn_listening("devstack", devstack_args, dev_env, devstack_ready)

        ingest_env = dict(base_env)
        ingest_env.update(
            BINANCE_WS_URL=f"ws://127.0.0.1:{feed_port}",
            SYMBOLS=SYMBOLS,
            REDIS_URL=services["REDIS_URL"],
            KEY_PREFIX=prefix,
            # The trigger engine: rebuilds its index from the ledger, sends to this queue.
            DATABASE_URL=services["DATABASE_INGEST_URL"],
            COMMANDS_QUEUE_URL=queue_url,
            # The fan-out: this stack's connections, pushed through its devstack.
            CONNECTIONS_TABLE=table,
            WS_MANAGEMENT_URL=st.ws_url.replace("ws://", "http://", 1) + "/local",
        )
        st.spawn("ingest", [str(bin_dir / "ingest")], ingest_env)
        st.check_alive()
    except BaseException:
        _FAILED = True  # keep the logs of a stack that did not start
        st.stop()
        _STACK = None
        try:
            sqs.delete_queue(QueueUrl=queue_url)
        except Exception:  # noqa: BLE001 - best effort
            pass
        raise
    try:
        yield st
    finally:
        st.stop()
        if not _FAILED:
            shutil.rmtree(log_dir, ignore_errors=True)
        try:
            sqs.delete_queue(QueueUrl=queue_url)
        except Exception:  # noqa: BLE001 - best effort; moto is restarted per `make test`
            pass
        _STACK = None


# ----------------------------------------------------------------------------- trader ---


class Trader:
    """A signed-up user with an API key and an alpaca-py `TradingClient` using it."""

    def __init__(self, stack, email, key_id, secret, client):
        self.stack = stack
        self.email = email
        self.key_id = key_id
        self.secret = secret
        self.client = client

    @property
    def key_headers(self):
        return {"APCA-API-KEY-ID": self.key_id, "APCA-API-SECRET-KEY": self.secret}

    def wait_order(self, order_id, statuses, what):
        """Polls get_order_by_id until the status is one of `statuses` (bounded)."""
        from alpaca.trading.models import Order

        deadline = time.monotonic() + WAIT_TIMEOUT_S
        while True:
            last = self.client.get_order_by_id(order_id)
            assert isinstance(last, Order), last
            if last.status in statuses:
                return last
            if time.monotonic() > deadline:
                self.stack.fail(f"order {order_id} never became {what} within {WAIT_TIMEOUT_S:.0f} s; last: {last!r}")
            self.stack.check_alive()
            time.sleep(0.2)


@pytest.fixture(scope="module")
def trader(stack):
    """A fresh user per test module: sign-up, login, an API key (with the session token),
    and an alpaca-py client using that key against the devstack."""
    from alpaca.trading.client import TradingClient

    email = f"py-{uuid.uuid4().hex[:16]}@example.com"
    password = "correct horse battery staple"
    status, body = stack.rest("POST", "/v2/auth/signup", {"email": email, "password": password})
    assert status == 202, f"POST /v2/auth/signup: {status} {body}"
    status, body = stack.rest("POST", "/v2/auth/login", {"email": email, "password": password})
    assert status == 200 and isinstance(body, dict) and body.get("token"), f"POST /v2/auth/login: {status} {body}"
    token = body["token"]
    status, body = stack.rest("POST", "/v2/api_keys", {}, {"Authorization": f"Bearer {token}"})
    assert status == 201 and body.get("key_id") and body.get("secret_key"), f"POST /v2/api_keys: {status} {body}"
    client = TradingClient(body["key_id"], body["secret_key"], paper=True, url_override=stack.rest_url)
    return Trader(stack, email, body["key_id"], body["secret_key"], client)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    global _FAILED
    if rep.failed:
        _FAILED = True
        if _STACK is not None and _STACK.procs:
            rep.sections.append(("stack logs (tails)", _STACK.logs()))


def pytest_configure(config):
    # alpaca-py imports websockets.legacy, deprecated in websockets 14: not ours to fix.
    config.addinivalue_line("filterwarnings", "ignore:websockets.legacy is deprecated:DeprecationWarning")
