-- Incident response (PC-12): every token of a principal issued at or before
-- `not_before` is refused — by introspection and token exchange here, and by
-- every verifier through the published revocation list (GET /revocations).
-- `disabled` also stops new tokens: no client authentication for a client,
-- no login (and no refresh) for a user. Set by `auth revoke`, cleared by
-- `auth reinstate`; `not_before` only ever moves forward.
CREATE TABLE auth.revoked_principal (
    principal  text        PRIMARY KEY,  -- a user's subject (its id) or a client id
    kind       text        NOT NULL CHECK (kind IN ('user', 'client')),
    not_before bigint      NOT NULL,     -- unix seconds
    disabled   boolean     NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_principal_not_before ON auth.revoked_principal (not_before);
