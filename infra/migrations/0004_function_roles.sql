-- Least privilege: one role per kind of function, so a bug or an injection in a function
-- that serves users cannot write the ledger. The migrations create the roles without a
-- password (NOLOGIN); the deploy's migrate step gives each its password from its secret
-- (adapters::schema::ensure_login), and each function connects as its own role.
--
--   trading_api       api, webhook and ws: read everything; write only what they own
--                     (users, new accounts, API keys, webhooks and their deliveries, risk
--                     limits and the kill switch), never orders, fills, positions or cash.
--   trading_executor  the executor, the ledger's only writer: orders, fills, positions,
--                     processed commands, cash and PnL (and the kill switch it trips).
--   trading_ingest    the ingest task: reads the resting orders its trigger index is rebuilt
--                     from; writes nothing.
--
-- Roles belong to the cluster, not to one database: creating them tolerates their existing
-- already (another database of the same cluster, or a concurrent migration of one).
DO $$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['trading_api', 'trading_executor', 'trading_ingest'] LOOP
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = role_name) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', role_name);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL; -- created meanwhile by a concurrent migration
            END;
        END IF;
    END LOOP;
END $$;

GRANT USAGE ON SCHEMA public TO trading_api, trading_executor, trading_ingest;
-- PostgreSQL before 15 lets every role create tables in `public`; only the owner may here.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Tables created by later migrations get their grants there.
-- Everyone reads the ledger (the api answers from it; the executor and ingest work from it).
GRANT SELECT ON ALL TABLES IN SCHEMA public TO trading_api, trading_executor, trading_ingest;
-- Except the migrations' own bookkeeping, which only the migrating role touches.
REVOKE SELECT ON _sqlx_migrations FROM trading_api, trading_executor, trading_ingest;

-- The api's own tables.
GRANT INSERT, UPDATE ON users, api_keys, webhooks, risk_limits TO trading_api;
GRANT INSERT ON webhook_deliveries TO trading_api;
-- Signup opens the account with its initial cash; afterwards only the kill switch is the
-- api's to change. Cash, realized PnL and fees stay the executor's.
GRANT INSERT (id, user_id, account_number, initial_cash, cash) ON accounts TO trading_api;
GRANT UPDATE (killed_at, kill_reason) ON accounts TO trading_api;

-- The executor's ledger. No DELETE anywhere: nothing in the ledger is ever removed (and
-- fills are immutable by trigger as well).
GRANT INSERT, UPDATE ON orders, positions, processed_commands TO trading_executor;
GRANT INSERT ON fills TO trading_executor;
GRANT UPDATE (cash, realized_pnl, fees_paid, updated_at, killed_at, kill_reason)
    ON accounts TO trading_executor;
