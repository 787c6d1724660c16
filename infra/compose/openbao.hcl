# OpenBao for the compose estate: file storage in the `openbao` volume, TLS
# with the certificate from the `certs` job. Initialised and unsealed by the
# bootstrap job (one key share: a demo host; production uses auto-unseal).
storage "file" {
  path = "/openbao/file"
}

listener "tcp" {
  address       = "0.0.0.0:8200"
  tls_cert_file = "/certs/openbao/tls.crt"
  tls_key_file  = "/certs/openbao/tls.key"
}

api_addr = "https://openbao.openbao.svc.cluster.local:8200"
ui       = false
