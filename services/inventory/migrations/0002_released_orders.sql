-- Released orders: once an order's reservation is released (cancelled,
-- payment failed), a late or replayed Reserve for the same order is refused
-- instead of taking stock again — compensation is final.
CREATE TABLE inventory.released_orders (
    order_id    uuid        PRIMARY KEY,
    released_by text        NOT NULL CHECK (released_by LIKE 'spiffe://%'),
    released_at timestamptz NOT NULL DEFAULT now()
);

-- Written once, never edited or removed by the service.
REVOKE UPDATE, DELETE ON inventory.released_orders FROM inventory_app;
