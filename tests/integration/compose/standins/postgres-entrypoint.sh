#!/usr/bin/env bash
# What the official postgres image's entrypoint does for docker-compose.yaml, when the command is
# `postgres`: as root, hand PGDATA to the postgres user and re-run as it; on an empty PGDATA, initdb
# with POSTGRES_USER as superuser and POSTGRES_PASSWORD, password (scram-sha-256) logins from the
# network, create POSTGRES_DB; then the server, listening on every address. A PGDATA that holds a
# cluster is used as it is. Any other command runs as given.
set -euo pipefail
if [ "${1:-}" != postgres ]; then
  exec "$@"
fi
if [ "$(id -u)" = 0 ]; then
  chown -R postgres:postgres "$PGDATA"
  chmod 700 "$PGDATA"
  exec gosu postgres "$0" "$@"
fi
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
  user="${POSTGRES_USER:-postgres}"
  initdb -D "$PGDATA" --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
    --auth-local=trust --auth-host=scram-sha-256 -E UTF8
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  db="${POSTGRES_DB:-$user}"
  if [ "$db" != postgres ]; then
    postgres --single -D "$PGDATA" -c listen_addresses= postgres <<< "CREATE DATABASE \"$db\" OWNER \"$user\";" >/dev/null
  fi
fi
shift
exec postgres -c listen_addresses='*' "$@"
