#!/bin/sh
# A first start initialises the cluster (the postgres image's entrypoint does
# the same from environment variables; here the password is a file and never
# an environment variable): the superuser's password from the postgres-tls
# Secret, SCRAM for every TCP client, TLS only (hostssl), the `estate` database.
set -eu
if [ -s "$PGDATA/PG_VERSION" ]; then
  exit 0
fi
initdb -D "$PGDATA" --username=postgres --pwfile=/etc/postgres/tls/superuser-password \
  --auth-local=scram-sha-256 --auth-host=scram-sha-256 >/dev/null
echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
echo "hostssl all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
echo "CREATE DATABASE estate" | postgres --single -D "$PGDATA" postgres >/dev/null
