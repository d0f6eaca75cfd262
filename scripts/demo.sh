#!/usr/bin/env bash
# backupkit's main job on a fresh machine, with no server: builds the
# `backupkit` binary, backs up a directory into a local repository, lists
# the snapshots, restores the latest one, verifies every byte, and compares
# the restored tree with the original.
#
#   scripts/demo.sh [DIR]     (default: a generated sample lab tree)
#
# Everything it writes goes under ./demo (repository, sample data, restore).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p backup-cli
bk="$(pwd)/target/release/backupkit"
work="$(pwd)/demo"
src="${1:-}"
if [ -z "$src" ]; then
  src="$work/lab-data"
  if [ ! -d "$src" ]; then
    mkdir -p "$src/csv" "$src/figures" "$src/recordings"
    for i in $(seq 1 200); do
      printf 'trial,time,value\n%s,%s,%s\n' "$i" "$((i * 3))" "$((i * 7 % 101))" > "$src/csv/run_$i.csv"
    done
    printf '{"experiment": "demo", "runs": 200}\n' > "$src/figures/summary.json"
    head -c 5000000 /dev/urandom > "$src/recordings/cam0.bin"
  fi
fi
src="$(cd "$src" && pwd)"
export BACKUPKIT_REPOSITORY="$work/repo"
[ -f "$BACKUPKIT_REPOSITORY/backupkit.json" ] || "$bk" init
"$bk" backup "$src" --tag demo --exclude '*.tmp'
"$bk" snapshots
rm -rf "$work/restore"
"$bk" restore latest --target "$work/restore"
"$bk" check --read-data
diff -r "$src" "$work/restore$src" && echo "restored tree is identical to $src"
