-- A compromised signing key (PC-12): `auth keys revoke KID` removes it from
-- the key set in OpenBao and records it here, so the revocation list tells
-- every verifier to refuse tokens it signed at once, instead of when their
-- JWKS caches expire. Kept until those tokens would have expired anyway.
CREATE TABLE auth.revoked_signing_key (
    kid        text   PRIMARY KEY,
    revoked_at bigint NOT NULL  -- unix seconds
);
