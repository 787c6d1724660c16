# OpenBao for the compose estate: integrated (raft) storage in the `openbao`
# volume (OpenBao 2 has no `file` storage), TLS with the certificate from the
# `certs` job. Initialised and unsealed by the bootstrap job
# (`estate-bootstrap configure --init-dir`; one key share: a demo host —
# production uses auto-unseal). The same shape runs in
# tools/bootstrap/tests/bootstrap.rs against the real binary.
storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-0"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/certs/openbao/tls.crt"
  tls_key_file    = "/run/estate/tls.key"
}

api_addr     = "https://openbao.openbao.svc.cluster.local:8200"
cluster_addr = "https://openbao.openbao.svc.cluster.local:8201"
ui           = false
