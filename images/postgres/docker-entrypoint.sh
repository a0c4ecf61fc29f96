#!/bin/bash
# First-run initdb as the official postgres image does it, then exec the server as user postgres.
set -eo pipefail
if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi
if [ "$1" != 'postgres' ]; then exec "$@"; fi

: "${PGDATA:=/var/lib/postgresql/data}"
: "${POSTGRES_USER:=postgres}"
: "${POSTGRES_DB:=$POSTGRES_USER}"
export PGDATA

# As the official image: VAR_FILE names a file that holds VAR's value, so a secret need not be in
# the container's environment.
file_env() {
  local var=$1 file_var="${1}_FILE"
  if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
    echo >&2 "error: both $var and $file_var are set (but are exclusive)"
    exit 1
  fi
  if [ -n "${!file_var:-}" ]; then
    export "$var"="$(<"${!file_var}")"
    unset "$file_var"
  fi
}
file_env POSTGRES_PASSWORD

mkdir -p "$PGDATA" /var/run/postgresql
chown postgres:postgres "$PGDATA" /var/run/postgresql
chmod 700 "$PGDATA"

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != 'trust' ]; then
    echo >&2 'error: database is uninitialized and POSTGRES_PASSWORD is not set'
    echo >&2 '  (or set POSTGRES_HOST_AUTH_METHOD=trust)'
    exit 1
  fi
  # The password reaches initdb through a private file, never an argument list.
  pwfile=$(mktemp)
  printf '%s\n' "${POSTGRES_PASSWORD:-}" >"$pwfile"
  chown postgres "$pwfile"
  # shellcheck disable=SC2086 # extra initdb arguments are split into words, as the official image does
  gosu postgres initdb --username="$POSTGRES_USER" --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 $POSTGRES_INITDB_ARGS >/dev/null
  rm -f "$pwfile"
  echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
  echo "host all all all ${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}" >>"$PGDATA/pg_hba.conf"
  if [ "$POSTGRES_DB" != 'postgres' ]; then
    # Single-user mode: no server listens while the database is created.
    printf 'CREATE DATABASE "%s";\n' "${POSTGRES_DB//\"/\"\"}" \
      | gosu postgres postgres --single -jE postgres >/dev/null
  fi
  echo 'PostgreSQL init process complete; ready for start up.'
fi

# The server needs no password of its environment.
unset POSTGRES_PASSWORD
exec gosu postgres "$@"
