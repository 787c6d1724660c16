-- Per-service database roles (ARCHITECTURE §4). Run as a superuser, once per
-- service, with :svc, :owner_password and :app_password substituted.
--
--   <svc>_owner  owns the schema; migrations (DDL) run as this role.
--   <svc>_app    what the service connects as: DML on its own schema only;
--                no DDL, no other schema, not a superuser.
--
-- Dynamic per-instance credentials from OpenBao (issue 5) become members of
-- <svc>_app; until then <svc>_app logs in with a generated password.

CREATE ROLE :svc_owner LOGIN PASSWORD :'owner_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
CREATE ROLE :svc_app LOGIN PASSWORD :'app_password'
    NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT;

CREATE SCHEMA :svc AUTHORIZATION :svc_owner;
REVOKE ALL ON SCHEMA :svc FROM PUBLIC;
GRANT USAGE ON SCHEMA :svc TO :svc_app;

-- Whatever the owner creates later is usable (DML only) by the app role.
ALTER DEFAULT PRIVILEGES FOR ROLE :svc_owner IN SCHEMA :svc
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :svc_app;
ALTER DEFAULT PRIVILEGES FOR ROLE :svc_owner IN SCHEMA :svc
    GRANT USAGE, SELECT ON SEQUENCES TO :svc_app;

-- Nobody creates objects in `public` (PostgreSQL 15 default; stated for older servers).
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
