-- Orders with lines, a status machine, idempotent creation, and a price list
-- the service reads but cannot change. Runs as orders_owner.

ALTER TABLE orders.orders
    ADD COLUMN currency        text        NOT NULL DEFAULT 'EUR' CHECK (currency ~ '^[A-Z]{3}$'),
    ADD COLUMN delivery_note   text        CHECK (length(delivery_note) <= 500),
    -- The client's Idempotency-Key and a digest of what it asked for: a
    -- retry with the same key gets the same order, a different request
    -- under a used key is refused.
    ADD COLUMN idempotency_key text        NOT NULL DEFAULT gen_random_uuid()::text
                                           CHECK (idempotency_key ~ '^[A-Za-z0-9_-]{8,64}$'),
    ADD COLUMN request_digest  text        NOT NULL DEFAULT '',
    ADD COLUMN payment_id      uuid,
    ADD COLUMN failure_reason  text        CHECK (failure_reason IN ('out_of_stock', 'payment_declined', 'payment_unavailable', 'inventory_unavailable')),
    ADD COLUMN updated_at      timestamptz NOT NULL DEFAULT now(),
    ADD CONSTRAINT orders_status_known
        CHECK (status IN ('pending', 'confirmed', 'failed', 'cancelled', 'refunded')),
    -- A failed order says why; only a confirmed (or later) order has a payment.
    ADD CONSTRAINT orders_failure_explained
        CHECK ((status = 'failed') = (failure_reason IS NOT NULL)),
    ADD CONSTRAINT orders_paid_when_confirmed
        CHECK (status NOT IN ('confirmed', 'cancelled', 'refunded') OR payment_id IS NOT NULL);

CREATE UNIQUE INDEX orders_idempotency ON orders.orders (customer_id, idempotency_key);
CREATE INDEX orders_by_customer ON orders.orders (customer_id, created_at DESC, id DESC);

CREATE TABLE orders.order_lines (
    order_id         uuid   NOT NULL REFERENCES orders.orders (id),
    customer_id      text   NOT NULL,
    sku              text   NOT NULL CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    quantity         integer NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents >= 0),
    PRIMARY KEY (order_id, sku)
);

ALTER TABLE orders.order_lines ENABLE ROW LEVEL SECURITY;
ALTER TABLE orders.order_lines FORCE ROW LEVEL SECURITY;
CREATE POLICY order_lines_owner_only ON orders.order_lines
    FOR ALL
    TO orders_app
    USING (customer_id = current_setting('estate.subject', true))
    WITH CHECK (customer_id = current_setting('estate.subject', true));

-- Lines are written once with their order and never edited or removed.
REVOKE UPDATE, DELETE ON orders.order_lines FROM orders_app;
-- Orders are never deleted; only status, payment, note and timestamps change.
REVOKE DELETE ON orders.orders FROM orders_app;
REVOKE UPDATE ON orders.orders FROM orders_app;
GRANT UPDATE (status, payment_id, failure_reason, delivery_note, updated_at) ON orders.orders TO orders_app;

-- The price list: maintained by the catalogue owner, read by the service.
-- Prices are decided here, never by a client.
CREATE TABLE orders.prices (
    sku              text   PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    unit_price_cents bigint NOT NULL CHECK (unit_price_cents BETWEEN 0 AND 100000000),
    currency         text   NOT NULL CHECK (currency ~ '^[A-Z]{3}$')
);
REVOKE INSERT, UPDATE, DELETE ON orders.prices FROM orders_app;
