#!/usr/bin/env bash
# Throwaway services for the tests: a PostgreSQL cluster and a MariaDB
# server, each in a temporary directory, on 127.0.0.1, removed when the
# calling shell exits.
#
# Sourced (scripts/test.sh does this):
#   . scripts/services.sh
#   start_postgres        # exports BACKUPKIT_TEST_POSTGRES_URL
#   start_mariadb         # exports BACKUPKIT_TEST_MYSQL_URL
# Run directly, it starts the services, runs a command, then stops them:
#   scripts/services.sh cargo nextest run -p backup-db --all-features
#
# Installs Debian's `postgresql` / `mariadb-server` when no server is
# installed (as root). Ports: BACKUPKIT_TEST_POSTGRES_PORT, 55432 by default;
# BACKUPKIT_TEST_MYSQL_PORT, 53306 by default. Idempotent: a cluster this
# shell already started is reused, and clusters a killed run left behind are
# stopped and removed first.

backupkit_pg_port="${BACKUPKIT_TEST_POSTGRES_PORT:-55432}"
backupkit_pg_dir=""
backupkit_my_port="${BACKUPKIT_TEST_MYSQL_PORT:-53306}"
backupkit_my_dir=""

_services_log() { printf '==> services: %s\n' "$*" >&2; }

# Runs a command as the cluster's owner: the `postgres` system user when we
# are root (the server refuses to run as root), else ourselves.
_pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# The directory of the newest installed server's programs, if any.
_pg_bindir() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/postgres" ] && printf '%s\n' "$d"
}

# Installs the PostgreSQL server (Debian's, matching its psql/pg_dump) if
# no server is installed.
install_postgres() {
  if _pg_bindir >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _services_log "no PostgreSQL server installed, and not root to install one"
    return 1
  fi
  _services_log "installing PostgreSQL (apt-get install postgresql)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  _pg_bindir >/dev/null
}

# Stops and removes clusters that an earlier, killed run left behind (those
# whose starting shell is gone; a concurrent run's cluster is left alone).
_pg_remove_stale() {
  local dir bindir owner
  bindir=$(_pg_bindir) || return 0
  for dir in "${TMPDIR:-/tmp}"/backupkit-pg.*; do
    [ -d "$dir" ] || continue
    [ "$dir" = "$backupkit_pg_dir" ] && continue
    owner=$(cat "$dir/owner" 2>/dev/null || true)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
      continue
    fi
    if [ -f "$dir/data/postmaster.pid" ]; then
      (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w stop) >/dev/null 2>&1 || true
    fi
    rm -rf "$dir" 2>/dev/null || true
  done
}

# Whether something listens on 127.0.0.1:$1.
_port_busy() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Starts a throwaway cluster and exports BACKUPKIT_TEST_POSTGRES_URL
# (superuser `backupkit`, a random password, database `postgres`). Stops and
# removes it when the shell exits.
start_postgres() {
  if [ -n "${BACKUPKIT_TEST_POSTGRES_URL:-}" ]; then
    # Started by this shell or a parent, or a server of the caller's own.
    [ -n "$backupkit_pg_dir" ] || _services_log "using the PostgreSQL in BACKUPKIT_TEST_POSTGRES_URL"
    return 0
  fi
  local started=$SECONDS bindir dir password
  install_postgres || return 1
  bindir=$(_pg_bindir)
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
  fi
  _pg_remove_stale
  # The default port taken (a concurrent run): the next free one.
  if [ -z "${BACKUPKIT_TEST_POSTGRES_PORT:-}" ]; then
    while _port_busy "$backupkit_pg_port" && [ "$backupkit_pg_port" -lt 55500 ]; do
      backupkit_pg_port=$((backupkit_pg_port + 1))
    done
  fi
  dir=$(mktemp -d "${TMPDIR:-/tmp}/backupkit-pg.XXXXXX")
  backupkit_pg_dir=$dir
  trap _services_stop_all EXIT
  echo "$$" >"$dir/owner"
  mkdir "$dir/sock"
  password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
  (umask 077 && printf '%s\n' "$password" >"$dir/pwfile")
  if [ "$(id -u)" -eq 0 ]; then
    chown -R postgres: "$dir"
  fi
  (
    cd "$dir" &&
      _pg_as_owner "$bindir/initdb" -D "$dir/data" -U backupkit --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --locale=C --no-sync >"$dir/initdb.log" 2>&1
  ) || {
    _services_log "initdb failed:"
    cat "$dir/initdb.log" >&2
    return 1
  }
  rm -f "$dir/pwfile"
  (
    cd "$dir" &&
      _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $backupkit_pg_port -k $dir/sock -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        start >/dev/null
  ) || {
    _services_log "PostgreSQL did not start:"
    tail -n 20 "$dir/server.log" >&2
    return 1
  }
  local i
  for i in $(seq 1 100); do
    "$bindir/pg_isready" -q -h 127.0.0.1 -p "$backupkit_pg_port" && break
    sleep 0.1
  done
  "$bindir/pg_isready" -q -h 127.0.0.1 -p "$backupkit_pg_port" || {
    _services_log "PostgreSQL is not ready on 127.0.0.1:$backupkit_pg_port"
    return 1
  }
  export BACKUPKIT_TEST_POSTGRES_URL="postgres://backupkit:$password@127.0.0.1:$backupkit_pg_port/postgres"
  _services_log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') on 127.0.0.1:$backupkit_pg_port (ready in $((SECONDS - started)) s)"
}

# Stops the cluster start_postgres started and removes its directory.
stop_postgres() {
  local dir=$backupkit_pg_dir bindir
  [ -n "$dir" ] || return 0
  backupkit_pg_dir=""
  unset BACKUPKIT_TEST_POSTGRES_URL
  if bindir=$(_pg_bindir) && [ -f "$dir/data/postmaster.pid" ]; then
    (cd "$dir" && _pg_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w stop) >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

# Stops every service this shell started (the EXIT trap).
_services_stop_all() {
  stop_postgres
  stop_mariadb
}

# The MariaDB (or MySQL) server program, if one is installed.
_my_server() {
  local p
  for p in mariadbd mysqld /usr/sbin/mariadbd /usr/sbin/mysqld; do
    if command -v "$p" >/dev/null 2>&1; then
      command -v "$p"
      return 0
    fi
  done
  return 1
}

# The first of the given programs that is installed.
_my_tool() {
  local p
  for p in "$@"; do
    if command -v "$p" >/dev/null 2>&1; then
      command -v "$p"
      return 0
    fi
  done
  return 1
}

# Installs the MariaDB server (with its client, mariadb-dump) if no server
# is installed.
install_mariadb() {
  if _my_server >/dev/null && _my_tool mariadb mysql >/dev/null; then
    return 0
  fi
  if [ "$(id -u)" -ne 0 ]; then
    _services_log "no MariaDB server installed, and not root to install one"
    return 1
  fi
  _services_log "installing MariaDB (apt-get install mariadb-server)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client >/dev/null
  _my_server >/dev/null
}

# Runs a command as the server's owner: the `mysql` system user when we are
# root, else ourselves.
_my_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u mysql -- "$@"
  else
    "$@"
  fi
}

# Stops and removes servers that an earlier, killed run left behind (those
# whose starting shell is gone; a concurrent run's server is left alone).
_my_remove_stale() {
  local dir owner pid
  for dir in "${TMPDIR:-/tmp}"/backupkit-my.*; do
    [ -d "$dir" ] || continue
    [ "$dir" = "$backupkit_my_dir" ] && continue
    owner=$(cat "$dir/owner" 2>/dev/null || true)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
      continue
    fi
    pid=$(cat "$dir/mariadb.pid" 2>/dev/null || true)
    if [ -n "$pid" ]; then
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir" 2>/dev/null || true
  done
}

# Starts a throwaway MariaDB server and exports BACKUPKIT_TEST_MYSQL_URL
# (user `backupkit` with every privilege, a random password, database
# `mysql`). Stops and removes it when the shell exits.
start_mariadb() {
  if [ -n "${BACKUPKIT_TEST_MYSQL_URL:-}" ]; then
    [ -n "$backupkit_my_dir" ] || _services_log "using the MariaDB in BACKUPKIT_TEST_MYSQL_URL"
    return 0
  fi
  local started=$SECONDS server installdb client admin dir password i
  install_mariadb || return 1
  server=$(_my_server)
  installdb=$(_my_tool mariadb-install-db mysql_install_db) || {
    _services_log "mariadb-install-db is missing"
    return 1
  }
  client=$(_my_tool mariadb mysql)
  admin=$(_my_tool mariadb-admin mysqladmin)
  if [ "$(id -u)" -eq 0 ] && ! id mysql >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin mysql
  fi
  _my_remove_stale
  if [ -z "${BACKUPKIT_TEST_MYSQL_PORT:-}" ]; then
    while _port_busy "$backupkit_my_port" && [ "$backupkit_my_port" -lt 53400 ]; do
      backupkit_my_port=$((backupkit_my_port + 1))
    done
  fi
  dir=$(mktemp -d "${TMPDIR:-/tmp}/backupkit-my.XXXXXX")
  backupkit_my_dir=$dir
  trap _services_stop_all EXIT
  echo "$$" >"$dir/owner"
  chmod 755 "$dir"
  if [ "$(id -u)" -eq 0 ]; then
    chown mysql: "$dir"
  fi
  password=$(od -An -N18 -tx1 /dev/urandom | tr -d ' \n')
  # --no-defaults: the machine's my.cnf (its datadir, socket, port) stays
  # out of the throwaway server.
  (
    cd "$dir" &&
      _my_as_owner "$installdb" --no-defaults --user=mysql --datadir="$dir/data" \
        --auth-root-authentication-method=socket --skip-test-db >"$dir/install-db.log" 2>&1
  ) || {
    _services_log "mariadb-install-db failed:"
    tail -n 20 "$dir/install-db.log" >&2
    return 1
  }
  (
    cd "$dir" &&
      _my_as_owner "$server" --no-defaults --datadir="$dir/data" --bind-address=127.0.0.1 \
        --port="$backupkit_my_port" --socket="$dir/mariadb.sock" --pid-file="$dir/mariadb.pid" \
        --log-error="$dir/server.log" --skip-name-resolve --innodb-flush-log-at-trx-commit=0 \
        --innodb-doublewrite=0 --skip-log-bin </dev/null >/dev/null 2>&1 &
  )
  for i in $(seq 1 300); do
    "$admin" --no-defaults --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$admin" --no-defaults --socket="$dir/mariadb.sock" -uroot ping >/dev/null 2>&1 || {
    _services_log "MariaDB is not ready on 127.0.0.1:$backupkit_my_port:"
    tail -n 20 "$dir/server.log" >&2
    return 1
  }
  # The socket's root logs in by Unix identity (we are root, or the owner).
  "$client" --no-defaults --socket="$dir/mariadb.sock" -uroot <<SQL || {
CREATE USER 'backupkit'@'127.0.0.1' IDENTIFIED BY '$password';
CREATE USER 'backupkit'@'localhost' IDENTIFIED BY '$password';
GRANT ALL PRIVILEGES ON *.* TO 'backupkit'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'backupkit'@'localhost' WITH GRANT OPTION;
FLUSH PRIVILEGES;
SQL
    _services_log "could not create the MariaDB user"
    return 1
  }
  export BACKUPKIT_TEST_MYSQL_URL="mysql://backupkit:$password@127.0.0.1:$backupkit_my_port/mysql"
  _services_log "MariaDB $("$server" --version | awk '{print $3}') on 127.0.0.1:$backupkit_my_port (ready in $((SECONDS - started)) s)"
}

# Stops the server start_mariadb started and removes its directory.
stop_mariadb() {
  local dir=$backupkit_my_dir pid i
  [ -n "$dir" ] || return 0
  backupkit_my_dir=""
  unset BACKUPKIT_TEST_MYSQL_URL
  pid=$(cat "$dir/mariadb.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
    for i in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}

# Run directly: start the services, run the command, stop them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  start_postgres
  start_mariadb
  if [ $# -gt 0 ]; then
    status=0
    "$@" || status=$?
    exit "$status"
  fi
  echo "BACKUPKIT_TEST_POSTGRES_URL and BACKUPKIT_TEST_MYSQL_URL are set for commands given as arguments; nothing to run" >&2
fi
