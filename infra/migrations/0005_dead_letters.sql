-- Commands the executor gave up on: on a command's last delivery before SQS moves it to
-- the dead-letter queue, the executor records it here, so that its account sees the order
-- as `suspended` with a reason (not `pending_new` until its pending copy expires) and the
-- operator sees what failed and why. The queue keeps the message itself for inspection and
-- redrive; a redriven command that applies makes its order the ledger's again, and readers
-- prefer the ledger, so the row needs no update.
CREATE TABLE dead_letters (
    command_id    uuid PRIMARY KEY,
    account_id    uuid NOT NULL,
    -- The order the command placed (a place command), else the order it was about.
    order_id      uuid,
    kind          text NOT NULL,
    -- The command as the queue carried it (an order to show while the message waits).
    command       jsonb NOT NULL,
    -- What the account is told.
    reason        text NOT NULL,
    -- What the operator is told (the error as the executor saw it); never shown to users.
    detail        text NOT NULL,
    receive_count integer NOT NULL,
    dead_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dead_letters_by_account ON dead_letters (account_id, dead_at);

GRANT SELECT ON dead_letters TO trading_api, trading_executor;
-- Re-recorded when a redriven command dies again (ON CONFLICT DO UPDATE).
GRANT INSERT, UPDATE ON dead_letters TO trading_executor;
