-- The ledger. Only the executor writes orders, fills, positions and cash; the api writes
-- users, accounts and api keys. Money and quantities are NUMERIC (exact), never float.

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL UNIQUE CHECK (email = lower(email)),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    id             uuid PRIMARY KEY,
    user_id        uuid NOT NULL UNIQUE REFERENCES users (id),
    account_number text NOT NULL UNIQUE,
    currency       text NOT NULL DEFAULT 'USDT',
    initial_cash   numeric NOT NULL CHECK (initial_cash >= 0),
    cash           numeric NOT NULL,
    realized_pnl   numeric NOT NULL DEFAULT 0,
    fees_paid      numeric NOT NULL DEFAULT 0,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id),
    account_id  uuid NOT NULL REFERENCES accounts (id),
    -- SHA-256 of the secret: secrets are 256 random bits, so a fast hash is enough.
    secret_hash text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE orders (
    id               uuid PRIMARY KEY,
    account_id       uuid NOT NULL REFERENCES accounts (id),
    client_order_id  text NOT NULL CHECK (length(client_order_id) BETWEEN 1 AND 48),
    symbol           text NOT NULL,
    asset_id         uuid NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    order_type       text NOT NULL,
    time_in_force    text NOT NULL,
    qty              numeric CHECK (qty > 0),
    notional         numeric CHECK (notional > 0),
    limit_price      numeric CHECK (limit_price > 0),
    filled_qty       numeric NOT NULL DEFAULT 0 CHECK (filled_qty >= 0),
    filled_avg_price numeric,
    status           text NOT NULL,
    reject_reason    text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    submitted_at     timestamptz NOT NULL,
    filled_at        timestamptz,
    canceled_at      timestamptz,
    failed_at        timestamptz,
    UNIQUE (account_id, client_order_id)
);
CREATE INDEX orders_account_submitted ON orders (account_id, submitted_at DESC, id);
CREATE INDEX orders_account_open ON orders (account_id)
    WHERE status IN ('new', 'partially_filled', 'accepted', 'pending_new');

-- Fills are immutable: corrections would be new fills, never edits.
CREATE TABLE fills (
    id               uuid PRIMARY KEY,
    account_id       uuid NOT NULL REFERENCES accounts (id),
    order_id         uuid NOT NULL REFERENCES orders (id),
    symbol           text NOT NULL,
    side             text NOT NULL CHECK (side IN ('buy', 'sell')),
    qty              numeric NOT NULL CHECK (qty > 0),
    price            numeric NOT NULL CHECK (price > 0),
    fee              numeric NOT NULL CHECK (fee >= 0),
    realized_pnl     numeric NOT NULL,
    cum_qty          numeric NOT NULL,
    leaves_qty       numeric NOT NULL,
    transaction_time timestamptz NOT NULL
);
CREATE INDEX fills_account_time ON fills (account_id, transaction_time DESC, id);
CREATE INDEX fills_order ON fills (order_id);

CREATE FUNCTION fills_are_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'fills are immutable';
END $$;
CREATE TRIGGER fills_immutable BEFORE UPDATE OR DELETE ON fills
    FOR EACH ROW EXECUTE FUNCTION fills_are_immutable();

CREATE TABLE positions (
    account_id      uuid NOT NULL REFERENCES accounts (id),
    symbol          text NOT NULL,
    asset_id        uuid NOT NULL,
    qty             numeric NOT NULL,
    avg_entry_price numeric NOT NULL,
    realized_pnl    numeric NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, symbol)
);

-- Every command the executor applied, recorded in the same transaction as its effects,
-- so a redelivered command changes nothing.
CREATE TABLE processed_commands (
    command_id   uuid PRIMARY KEY,
    account_id   uuid NOT NULL,
    kind         text NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
