-- The payments schema. Runs as payments_owner; the service connects as (a
-- member of) payments_app. Row-level security on the customer, as in orders:
-- every transaction of the service sets `estate.subject` first.

CREATE TABLE payments.payments (
    id            uuid        PRIMARY KEY,
    -- One payment per order: the anchor of idempotent authorization.
    order_id      uuid        NOT NULL UNIQUE,
    customer_id   text        NOT NULL,
    amount_cents  bigint      NOT NULL CHECK (amount_cents BETWEEN 1 AND 100000000),
    currency      text        NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    status        text        NOT NULL CHECK (status IN ('pending', 'authorized', 'declined', 'failed', 'refunded')),
    -- The provider's reference: internal, never shown to clients.
    psp_reference text        CHECK (psp_reference ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- Never more of a card than its last four digits.
    card_last4    text        CHECK (card_last4 ~ '^[0-9]{4}$'),
    -- The workload that authorized (the order service's SPIFFE ID).
    authorized_by text        NOT NULL CHECK (authorized_by LIKE 'spiffe://%'),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE payments.payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE payments.payments FORCE ROW LEVEL SECURITY;
CREATE POLICY payments_owner_only ON payments.payments
    FOR ALL
    TO payments_app
    USING (customer_id = current_setting('estate.subject', true))
    WITH CHECK (customer_id = current_setting('estate.subject', true));

-- Payments are never deleted; only their outcome changes.
REVOKE DELETE, UPDATE ON payments.payments FROM payments_app;
GRANT UPDATE (status, psp_reference, card_last4, updated_at) ON payments.payments TO payments_app;
