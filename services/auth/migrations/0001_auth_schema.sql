-- The auth schema. Runs as auth_owner; auth_app gets DML through the default
-- privileges set up by infra/postgres/service-roles.sql.

-- RFC 7523 §3: a client assertion's jti is accepted once (until it expires).
CREATE TABLE auth.client_assertion_jti (
    client_id  text        NOT NULL,
    jti        text        NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_assertion_jti_expires ON auth.client_assertion_jti (expires_at);

-- RFC 7009: revoked access tokens, by jti, kept until the token would expire anyway.
CREATE TABLE auth.revoked_token (
    jti        text        PRIMARY KEY,
    client_id  text        NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX revoked_token_expires ON auth.revoked_token (expires_at);
