#!/bin/bash
# First-run initialisation as the official mysql image does it, then exec the server as user mysql.
set -eo pipefail

# Arguments that start with '-' are server options: `docker run IMAGE --character-set-server=utf8`.
if [ "${1:0:1}" = '-' ]; then set -- mariadbd "$@"; fi
if [ "$1" != 'mariadbd' ] && [ "$1" != 'mysqld' ]; then exec "$@"; fi
shift
# As the official image, the data directory may be moved with a --datadir argument.
DATADIR=/var/lib/mysql
for arg in "$@"; do
  case "$arg" in --datadir=*) DATADIR=${arg#--datadir=} ;; esac
done
SOCKET=/run/mysqld/mysqld.sock

# Quote a value as an SQL string literal: double backslashes and single quotes.
sql_quote() { local v=${1//\\/\\\\}; printf "'%s'" "${v//\'/\'\'}"; }
# Quote a name as an SQL identifier.
sql_ident() { printf '`%s`' "${1//\`/\`\`}"; }

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
file_env MYSQL_ROOT_PASSWORD
file_env MYSQL_PASSWORD

mkdir -p /run/mysqld "$DATADIR" && chown mysql:mysql /run/mysqld "$DATADIR"

if [ ! -d "$DATADIR/mysql" ]; then
  if [ -z "${MYSQL_ROOT_PASSWORD:-}" ] && [ -z "${MYSQL_ALLOW_EMPTY_PASSWORD:-}" ]; then
    echo >&2 'error: database is uninitialized and MYSQL_ROOT_PASSWORD is not set'
    echo >&2 '  (or set MYSQL_ALLOW_EMPTY_PASSWORD=yes)'
    exit 1
  fi
  echo 'Initializing database'
  mariadb-install-db --user=mysql --datadir="$DATADIR" --skip-test-db \
    --auth-root-authentication-method=normal --rpm >/dev/null
  # A temporary server with no networking, so nobody connects before the passwords are set.
  gosu mysql mariadbd --skip-networking --socket="$SOCKET" "$@" &
  pid=$!
  for _ in $(seq 300); do
    mariadb-admin --socket="$SOCKET" -uroot ping >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { echo >&2 'error: temporary server exited'; exit 1; }
    sleep 0.1
  done
  pw=$(sql_quote "${MYSQL_ROOT_PASSWORD:-}")
  {
    echo "SET @@SESSION.SQL_LOG_BIN=0;"
    echo "DELETE FROM mysql.global_priv WHERE User='' OR (User='root' AND Host NOT IN ('localhost'));"
    echo "ALTER USER 'root'@'localhost' IDENTIFIED BY $pw;"
    echo "CREATE USER 'root'@'%' IDENTIFIED BY $pw;"
    echo "GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;"
    if [ -n "${MYSQL_DATABASE:-}" ]; then
      echo "CREATE DATABASE IF NOT EXISTS $(sql_ident "$MYSQL_DATABASE");"
    fi
    if [ -n "${MYSQL_USER:-}" ] && [ -n "${MYSQL_PASSWORD:-}" ]; then
      echo "CREATE USER $(sql_quote "$MYSQL_USER")@'%' IDENTIFIED BY $(sql_quote "$MYSQL_PASSWORD");"
      if [ -n "${MYSQL_DATABASE:-}" ]; then
        echo "GRANT ALL ON $(sql_ident "$MYSQL_DATABASE").* TO $(sql_quote "$MYSQL_USER")@'%';"
      fi
    fi
    echo "FLUSH PRIVILEGES;"
  } | mariadb --protocol=socket --socket="$SOCKET" -uroot
  kill "$pid"
  wait "$pid" || true
  echo 'Database initialized; starting the server'
fi
# The server needs no password of its environment.
unset MYSQL_ROOT_PASSWORD MYSQL_PASSWORD

exec gosu mysql mariadbd "$@"
