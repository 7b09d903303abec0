-- Every Alpaca order type and class: stop and trailing prices, the high-water mark of a
-- trailing stop, legs (bracket, OCO, OTO) linked to their parent, day expiry, replacements.
ALTER TABLE orders
    ADD COLUMN order_class   text NOT NULL DEFAULT 'simple'
        CHECK (order_class IN ('simple', 'bracket', 'oco', 'oto')),
    ADD COLUMN stop_price    numeric CHECK (stop_price > 0),
    ADD COLUMN trail_price   numeric CHECK (trail_price > 0),
    ADD COLUMN trail_percent numeric CHECK (trail_percent > 0 AND trail_percent < 100),
    ADD COLUMN hwm           numeric,
    ADD COLUMN parent_id     uuid REFERENCES orders (id),
    ADD COLUMN leg_role      text CHECK (leg_role IN ('take_profit', 'stop_loss')),
    ADD COLUMN triggered_at  timestamptz,
    ADD COLUMN expires_at    timestamptz,
    ADD COLUMN expired_at    timestamptz,
    ADD COLUMN replaced_at   timestamptz,
    ADD COLUMN replaced_by   uuid,
    ADD COLUMN replaces      uuid;

-- Open orders now include legs held for their parent.
DROP INDEX orders_account_open;
CREATE INDEX orders_account_open ON orders (account_id)
    WHERE status IN ('new', 'partially_filled', 'accepted', 'pending_new', 'held');
-- The trigger index is rebuilt from every live resting order.
CREATE INDEX orders_live ON orders (symbol)
    WHERE status IN ('new', 'partially_filled') AND order_type <> 'market';
CREATE INDEX orders_parent ON orders (parent_id) WHERE parent_id IS NOT NULL;
