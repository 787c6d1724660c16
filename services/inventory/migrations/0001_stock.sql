-- The inventory schema. Runs as inventory_owner; the service connects as (a
-- member of) inventory_app.
--
-- The database, not only the service, guarantees the stock invariants:
--   * available stock never goes below zero (CHECK), so no code path — a
--     bug, a race, a forgotten guard — can oversell;
--   * one reservation line per (order, product) (PRIMARY KEY), the anchor of
--     idempotent Reserve calls;
--   * the app role may change a product's `available` count and nothing
--     else about it, may not create or delete products, and may add and
--     remove (release) reservations but never edit one.

CREATE TABLE inventory.products (
    sku       text    PRIMARY KEY CHECK (sku ~ '^[A-Z0-9][A-Z0-9-]{0,63}$'),
    name      text    NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    available integer NOT NULL CHECK (available >= 0)
);

CREATE TABLE inventory.reservations (
    order_id    uuid        NOT NULL,
    sku         text        NOT NULL REFERENCES inventory.products (sku),
    quantity    integer     NOT NULL CHECK (quantity BETWEEN 1 AND 1000),
    -- The SPIFFE ID of the workload that reserved (audit trail in the data).
    reserved_by text        NOT NULL CHECK (reserved_by LIKE 'spiffe://%'),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, sku)
);

-- Narrow the default DML grants (service-roles.sql) to what the service does.
REVOKE INSERT, UPDATE, DELETE ON inventory.products FROM inventory_app;
GRANT UPDATE (available) ON inventory.products TO inventory_app;
REVOKE UPDATE ON inventory.reservations FROM inventory_app;
