#!/usr/bin/env bash
# Renders `backupkit serve`'s status page with headless Chromium into
# docs/status-page.png (the README shows it), from a throwaway config with
# a job that works, one that fails, and a fleet of three local "devices":
# one pulled, one broken, one in the middle of a slow pull.
#
#   scripts/status-screenshot.sh [OUT.png]
#
# Installs Chromium (Debian's `chromium`) when it is missing and running as
# root. Everything it makes is under a temporary directory, removed at the
# end; the server listens on a free loopback port.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-$root/docs/status-page.png}"
browser=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$browser" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "status-screenshot: Chromium is not installed (apt-get install chromium)" >&2
    exit 1
  fi
  apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null
  browser=$(command -v chromium)
fi

cargo build --quiet -p backup-cli --manifest-path "$root/Cargo.toml"
bk="$root/target/debug/backupkit"
work=$(mktemp -d)
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

cd "$work"
mkdir -p data && printf 'x,y\n1,2\n' >data/results.csv
printf 'a file where a directory should be\n' >blocker
for n in 1 2 3; do
  for kind in results videos; do
    d="dev$n/$kind/0${n}c0ffee/ETHOSCOPE_00$n/2026-12-01_10-00-00"
    mkdir -p "$d"
    head -c 200000 /dev/urandom >"$d/run.db"
  done
done
# Device 3 is slow: a big video pulled at 2 MiB/s.
head -c $((64 << 20)) /dev/urandom >dev3/videos/03c0ffee/ETHOSCOPE_003/2026-12-01_10-00-00/whole_000.h264
# Device 2's results are unreadable.
rm -rf dev2/results && printf 'broken\n' >dev2/results
cat >backupkit.yaml <<EOF
jobs:
  lab-results:
    sources: [data]
    every: 1h
    destinations:
      nas: {mirror: nas/lab}
  lab-database:
    sources: [data]
    schedule: "0 2 * * *"
    destinations:
      repo: {repository: repo, init: true, keep_daily: 7}
  offsite:
    sources: [data]
    every: 30m
    destinations:
      cloud: {mirror: blocker/offsite}
  ethoscopes:
    pull:
      devices:
        - {id: 01c0ffee, name: ETHOSCOPE_001, url: $work/dev1}
        - {id: 02c0ffee, name: ETHOSCOPE_002, url: $work/dev2}
        - {id: 03c0ffee, name: ETHOSCOPE_003, url: $work/dev3}
      kinds:
        results: {remote: results, local: $work/pulled/results}
        videos: {remote: videos, local: $work/pulled/videos}
      bwlimit: 2M
    every: 5m
EOF
"$bk" --config backupkit.yaml serve --listen 127.0.0.1:0 --history history.json 2>serve.log &
serve_pid=$!
url=""
for _ in $(seq 100); do
  url=$(grep -o 'status on http://[0-9.:]*' serve.log | cut -d' ' -f3 || true)
  [ -n "$url" ] && break
  sleep 0.1
done
[ -n "$url" ] || { cat serve.log >&2; exit 1; }
sleep 4
mkdir -p "$(dirname "$out")"
"$browser" --headless=new --no-sandbox --disable-gpu --hide-scrollbars \
  --window-size=1280,900 --screenshot="$out" "$url/" >/dev/null 2>&1
echo "status-screenshot: $out ($(stat -c %s "$out") bytes) from $url/"
