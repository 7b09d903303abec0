-- Risk controls, the kill switch, and TradingView webhooks.

-- Per-account risk limits, set over `PATCH /v2/account/risk`. An account without a row has
-- the defaults (see domain::risk::RiskLimits::default). A NULL limit is switched off.
CREATE TABLE risk_limits (
    account_id            uuid PRIMARY KEY REFERENCES accounts (id),
    max_order_notional    numeric CHECK (max_order_notional > 0),
    max_position_notional numeric CHECK (max_position_notional > 0),
    max_open_orders       integer CHECK (max_open_orders >= 0),
    max_gross_leverage    numeric CHECK (max_gross_leverage > 0),
    daily_loss_limit      numeric CHECK (daily_loss_limit > 0),
    flatten_on_kill       boolean NOT NULL DEFAULT false,
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- The kill switch: while killed_at is set the account places no new order and buys nothing.
-- Tripped by hand (`POST /v2/account/kill`) or by the executor when the day's realized loss
-- reaches the daily loss limit; reset by hand (`DELETE /v2/account/kill`).
ALTER TABLE accounts
    ADD COLUMN killed_at   timestamptz,
    ADD COLUMN kill_reason text;

-- A TradingView webhook: its id is the unguessable secret in the URL; the passphrase in the
-- alert body is stored as its SHA-256 (a random 256-bit value: a fast hash is enough).
CREATE TABLE webhooks (
    id              text PRIMARY KEY,
    account_id      uuid NOT NULL REFERENCES accounts (id),
    name            text NOT NULL DEFAULT '',
    passphrase_hash text NOT NULL,
    -- NULL: any sender; otherwise only these source addresses.
    allowed_ips     text[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz,
    deleted_at      timestamptz
);
CREATE INDEX webhooks_account ON webhooks (account_id) WHERE deleted_at IS NULL;

-- Every alert a live webhook received, with what became of it.
CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    webhook_id      text NOT NULL REFERENCES webhooks (id),
    account_id      uuid NOT NULL REFERENCES accounts (id),
    received_at     timestamptz NOT NULL DEFAULT now(),
    source_ip       text,
    content_type    text,
    -- The body as received (passphrase redacted), cut at 8 KB.
    body            text NOT NULL,
    status          integer NOT NULL,
    outcome         text NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    code            text,
    message         text,
    order_id        uuid,
    client_order_id text
);
CREATE INDEX webhook_deliveries_recent ON webhook_deliveries (webhook_id, received_at DESC, id);
