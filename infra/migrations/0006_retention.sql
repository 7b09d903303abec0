-- Retention of the bookkeeping tables that otherwise grow forever (the ledger's facts:
-- orders, fills, positions, accounts, are never removed). The executor's scheduled prune
-- (adapters::ledger::retention) deletes, in small batches:
--   processed_commands  older than RETENTION_DAYS (at least 15: longer than the dead-letter
--                       queue keeps a message, 14 days, so a redriven command is still known)
--   webhook_deliveries  older than RETENTION_DAYS (the alert log users read)
--   dead_letters        older than RETENTION_DAYS (the message left the DLQ long before)
-- BRIN indexes on the time columns: these tables are appended in time order, so a few pages
-- of index find the old rows, and a new row costs next to nothing to index (a B-tree entry
-- per executed command would slow every batch).
CREATE INDEX processed_commands_age ON processed_commands USING brin (processed_at);
CREATE INDEX webhook_deliveries_age ON webhook_deliveries USING brin (received_at);

GRANT DELETE ON processed_commands, webhook_deliveries, dead_letters TO trading_executor;

-- Every role reads every table of the ledger (0004), dead letters included.
GRANT SELECT ON dead_letters TO trading_ingest;
