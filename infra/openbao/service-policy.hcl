# Least privilege for one Estate service, SERVICE substituted at bootstrap.
# A service reads its own secrets, gets its own database credentials and its
# own SPIFFE certificate, and manages only its own leases. Nothing else:
# default deny covers every other path (tested in estate-secrets).

# Its own secrets. The auth service also writes its signing key set here.
path "kv/data/SERVICE/*" {
  capabilities = ["create", "read", "update"]
}

# Except its schema owner's password: that is for the migration step only
# (a file, or the External Secrets Operator), never for the running service —
# with it the service could run DDL. An explicit deny wins over the grant above.
path "kv/data/SERVICE/db-owner" {
  capabilities = ["deny"]
}

# Dynamic database credentials: members of SERVICE_app, nothing more.
path "database/creds/SERVICE-app" {
  capabilities = ["read"]
}

# Renew and revoke only leases of its own database role.
path "sys/leases/renew/database/creds/SERVICE-app/*" {
  capabilities = ["update"]
}
path "sys/leases/revoke/database/creds/SERVICE-app/*" {
  capabilities = ["update"]
}

# Its own workload certificate (the PKI role pins the SPIFFE ID).
path "pki/issue/SERVICE" {
  capabilities = ["create", "update"]
}
