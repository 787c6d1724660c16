-- The role OpenBao's database engine connects as to create short-lived login
-- roles. Not a superuser: CREATEROLE lets it create roles and grant them
-- membership in the per-service <svc>_app roles (PostgreSQL 15 semantics).
CREATE ROLE openbao_admin LOGIN PASSWORD :'openbao_password'
    NOSUPERUSER NOCREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS;
