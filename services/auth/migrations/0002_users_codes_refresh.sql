-- Users, authorization codes and refresh tokens. Secrets are never stored:
-- passwords as argon2id PHC strings, codes and refresh tokens as SHA-256.

CREATE TABLE auth.users (
    id            uuid        PRIMARY KEY,
    username      text        NOT NULL UNIQUE,
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Failed logins per username string (existing or not: no enumeration), for lockout.
CREATE TABLE auth.login_failures (
    username     text        PRIMARY KEY,
    failures     integer     NOT NULL,
    first_failed timestamptz NOT NULL,
    locked_until timestamptz
);

-- RFC 6749 §4.1.2 / OAuth 2.1: single use, ≤ 60 s, bound to client, redirect URI and PKCE challenge.
CREATE TABLE auth.authorization_code (
    code_hash      bytea       PRIMARY KEY,
    client_id      text        NOT NULL,
    redirect_uri   text        NOT NULL,
    code_challenge text        NOT NULL,
    subject        text        NOT NULL,
    scope          text        NOT NULL,
    audiences      text[]      NOT NULL,
    nonce          text,
    openid         boolean     NOT NULL,
    auth_time      bigint      NOT NULL,
    expires_at     timestamptz NOT NULL,
    used           boolean     NOT NULL DEFAULT false,
    -- What the code was exchanged for, so a replay can revoke it.
    issued_jti     text,
    refresh_family uuid
);
CREATE INDEX authorization_code_expires ON auth.authorization_code (expires_at);

-- Refresh tokens rotate on every use; a reused one revokes its whole family.
CREATE TABLE auth.refresh_token (
    token_hash bytea       PRIMARY KEY,
    family     uuid        NOT NULL,
    client_id  text        NOT NULL,
    subject    text        NOT NULL,
    scope      text        NOT NULL,
    audiences  text[]      NOT NULL,
    expires_at timestamptz NOT NULL,
    used       boolean     NOT NULL DEFAULT false
);
CREATE INDEX refresh_token_family ON auth.refresh_token (family);

CREATE TABLE auth.revoked_family (
    family     uuid        PRIMARY KEY,
    revoked_at timestamptz NOT NULL DEFAULT now()
);
