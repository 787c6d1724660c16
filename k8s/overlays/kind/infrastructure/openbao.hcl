# OpenBao in the kind cluster: integrated (raft) storage on its volume, TLS
# with the certificate from `estate-bootstrap certs` (Secret openbao-tls).
# Initialised and unsealed by `estate-bootstrap configure --init-dir`
# (one key share: a local cluster; production unseals with a KMS).
storage "raft" {
  path    = "/openbao/file"
  node_id = "openbao-0"
}

listener "tcp" {
  address         = "0.0.0.0:8200"
  cluster_address = "0.0.0.0:8201"
  tls_cert_file   = "/openbao/tls/tls.crt"
  tls_key_file    = "/openbao/tls/tls.key"
}

api_addr     = "https://openbao.openbao.svc.cluster.local:8200"
cluster_addr = "https://openbao-0.openbao.openbao.svc.cluster.local:8201"
ui           = false
