# The External Secrets Operator in Kubernetes (k8s/base/secrets.yaml): it
# copies each service's TLS material and metrics token (`kv/<service>/tls`)
# and each schema owner's password for the migration Jobs
# (`kv/<service>/db-owner`) into Secrets mounted as 0400 files. Nothing else:
# not a service's private keys (order's client key, auth's signing keys), which
# only the service itself reads from OpenBao.
path "kv/data/+/tls" {
  capabilities = ["read"]
}
path "kv/data/+/db-owner" {
  capabilities = ["read"]
}
