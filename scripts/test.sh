#!/usr/bin/env bash
# Runs every backupkit test, Rust and Python, from a fresh clone.
# Installs what it needs (Debian packages, a Python venv with maturin,
# pytest and mypy). .ci/run calls this script with
# BACKUPKIT_REQUIRE_SERVICES=1, so tests that need a service fail instead of
# skipping when it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*" >&2; }

# Debian packages: tools the tests run (jq: the README's manifest command),
# and the system SQLite that backupkit links (shared with Python's sqlite3;
# see Cargo.toml).
need_apt=()
for tool in tar gzip zstd jq setpriv mount script pkg-config; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
dpkg -s libsqlite3-dev >/dev/null 2>&1 || need_apt+=(libsqlite3-dev)
# sshfs: a real network mount for the stale-mount test.
command -v sshfs >/dev/null 2>&1 || need_apt+=(sshfs)
# promtool (Debian's prometheus package) checks serve's /metrics.
command -v promtool >/dev/null 2>&1 || need_apt+=(promtool)
if [ ${#need_apt[@]} -gt 0 ]; then
  step "installing Debian packages for: ${need_apt[*]}"
  apt-get update -qq
  apt-get install -y -qq tar gzip zstd jq util-linux bsdutils mount pkg-config libsqlite3-dev sshfs >/dev/null
  command -v promtool >/dev/null 2>&1 ||
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi

venv="$root/target/venv"
if [ ! -x "$venv/bin/python" ]; then
  step "creating the Python venv in target/venv"
  python3 -m venv "$venv"
fi
# aiosmtpd: the local SMTP server the notification tests send mail to;
# zstandard: what a deduplicated repository's restore.py needs, run by the tests.
"$venv/bin/pip" install -q --disable-pip-version-check 'maturin>=1.7,<2' 'pytest>=8' 'mypy>=1.10' 'aiosmtpd>=1.4' 'zstandard>=0.22'
export BACKUPKIT_TEST_PYTHON="$venv/bin/python"

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --quiet -- -D warnings

step "services: a throwaway PostgreSQL (scripts/services.sh)"
# Installs the server if missing, starts it on 127.0.0.1, exports
# BACKUPKIT_TEST_POSTGRES_URL and stops it when this script exits.
. "$root/scripts/services.sh"
if ! start_postgres; then
  if [ "${BACKUPKIT_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "PostgreSQL could not be started and BACKUPKIT_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "PostgreSQL could not be started: its tests will be skipped" >&2
fi

step "services: a throwaway MariaDB (scripts/services.sh)"
# Installs the server if missing, starts it on 127.0.0.1, exports
# BACKUPKIT_TEST_MYSQL_URL and stops it when this script exits.
if ! start_mariadb; then
  if [ "${BACKUPKIT_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "MariaDB could not be started and BACKUPKIT_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "MariaDB could not be started: its tests will be skipped" >&2
fi

step "services: S3 (moto), Azure Blob (Azurite), GCS (fake-gcs-server), sshd, rclone, SMB (Samba)"
# Each on 127.0.0.1, installed when missing, exporting BACKUPKIT_TEST_*;
# stopped when this script exits.
if ! start_remote_services; then
  if [ "${BACKUPKIT_REQUIRE_SERVICES:-}" = 1 ]; then
    echo "a remote-target service could not be started and BACKUPKIT_REQUIRE_SERVICES=1" >&2
    exit 1
  fi
  echo "some remote-target services could not be started: their tests will be skipped" >&2
fi

step "Rust tests (cargo nextest)"
cargo nextest run --workspace --no-fail-fast

step "embedding example"
cargo run --quiet -p backupkit-examples --example embed

step "Python module: pip install ./backup-py (dev profile, shared target dir)"
# The dev profile reuses what the Rust tests just built.
MATURIN_PEP517_ARGS="--profile dev" "$venv/bin/pip" install -q --disable-pip-version-check --force-reinstall --no-deps ./backup-py

step "Python tests (pytest)"
"$venv/bin/python" -m pytest -q backup-py/tests
