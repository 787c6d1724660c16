-- Customer webhooks: callback URLs notified of payment events, and a record
-- of every delivery attempt. Row-level security on the customer.

CREATE TABLE payments.webhooks (
    id          uuid        PRIMARY KEY,
    customer_id text        NOT NULL,
    url         text        NOT NULL CHECK (length(url) <= 2048),
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, url)
);

CREATE TABLE payments.webhook_deliveries (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook_id  uuid        NOT NULL REFERENCES payments.webhooks (id),
    customer_id text        NOT NULL,
    payment_id  uuid        NOT NULL REFERENCES payments.payments (id),
    event       text        NOT NULL CHECK (event IN ('payment.authorized', 'payment.declined', 'payment.refunded')),
    outcome     text        NOT NULL CHECK (outcome ~ '^[a-z_0-9]{1,40}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE payments.webhooks ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.webhooks FORCE ROW LEVEL SECURITY;
CREATE POLICY webhooks_owner_only ON payments.webhooks
    FOR ALL TO payments_app
    USING (customer_id = current_setting('estate.subject', true))
    WITH CHECK (customer_id = current_setting('estate.subject', true));

ALTER TABLE payments.webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY webhook_deliveries_owner_only ON payments.webhook_deliveries
    FOR ALL TO payments_app
    USING (customer_id = current_setting('estate.subject', true))
    WITH CHECK (customer_id = current_setting('estate.subject', true));

-- A registration is never edited; a delivery record is never changed.
REVOKE UPDATE ON payments.webhooks FROM payments_app;
REVOKE UPDATE, DELETE ON payments.webhook_deliveries FROM payments_app;
