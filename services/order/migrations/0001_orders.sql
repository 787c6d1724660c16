-- The orders schema, with row-level security keyed on the caller's subject.
-- Runs as orders_owner. The app connects as (a member of) orders_app.
--
-- Every user-path transaction sets the subject first:
--     SELECT set_config('estate.subject', $1, true);   -- true = SET LOCAL
-- and the policy shows and accepts only that subject's rows. A query that
-- "forgets" its owner filter still sees nothing foreign, and a transaction
-- that forgets to set the subject sees nothing at all (fail closed).

CREATE TABLE orders.orders (
    id          uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    status      text        NOT NULL,
    total_cents bigint      NOT NULL CHECK (total_cents >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE orders.orders ENABLE ROW LEVEL SECURITY;
-- The owner too (it owns the table, and owners bypass RLS unless forced).
ALTER TABLE orders.orders FORCE ROW LEVEL SECURITY;

CREATE POLICY orders_owner_only ON orders.orders
    FOR ALL
    TO orders_app
    USING (customer_id = current_setting('estate.subject', true))
    WITH CHECK (customer_id = current_setting('estate.subject', true));
