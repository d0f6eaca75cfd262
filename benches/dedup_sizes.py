#!/usr/bin/env python3
"""What deduplicated snapshots would store, at two chunk sizes, before the
chunker's parameters are frozen into the repository format.

    python3 benches/dedup_sizes.py [--db-mb 1024] [--keep]

Runs `cargo run --release -p backupkit-benches --example dedup-sizes` on:

  tree: the comparison tree of benches/compare.py (target/compare/data,
        generated there) as a tar stream, stored twice (a no-change
        re-snapshot);
  sqlite: a SQLite database of about --db-mb MB (rows of lab-like results),
        stored, then again after 1% of its rows changed: updated in place at
        random, updated as one contiguous run, or appended; each state is
        the `.backup` copy backupkit takes.

for an average chunk of 256 KiB and of 1 MiB, and prints what each stream
stored against its size.
"""
from __future__ import annotations

import argparse
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "dedup-sizes"


def make_db(path: Path, mb: int) -> int:
    """A results database of about `mb` MB; returns its row count."""
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path)
    con.execute("PRAGMA journal_mode=OFF")
    con.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, sample TEXT, site TEXT,"
                " value REAL, note TEXT, taken TEXT)")
    rng = random.Random(1)
    rows = mb * 1024 * 1024 // 78
    batch = []
    for i in range(rows):
        batch.append((i, f"S{rng.randrange(10**6):06d}", rng.choice(["north", "south", "lab-a"]),
                      rng.random() * 1000, "ok" * rng.randrange(1, 30),
                      f"2026-{rng.randrange(1, 13):02d}-{rng.randrange(1, 29):02d}"))
        if len(batch) == 100_000:
            con.executemany("INSERT INTO results VALUES (?,?,?,?,?,?)", batch)
            batch.clear()
    con.executemany("INSERT INTO results VALUES (?,?,?,?,?,?)", batch)
    con.commit()
    con.close()
    return rows


def copy_db(src: Path, dst: Path) -> None:
    dst.unlink(missing_ok=True)
    a, b = sqlite3.connect(src), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()


def change(path: Path, rows: int, how: str) -> None:
    """Changes 1% of the rows: `random` ones scattered over the table,
    a `contiguous` run of them (one re-processed batch), or `appended` new
    ones."""
    con = sqlite3.connect(path)
    rng = random.Random(2)
    n = rows // 100
    if how == "random":
        ids = rng.sample(range(rows), n)
    elif how == "contiguous":
        start = rng.randrange(rows - n)
        ids = list(range(start, start + n))
    else:
        con.executemany("INSERT INTO results VALUES (?,?,?,?,?,?)",
                        [(rows + i, f"S{i:06d}", "new", 1.0, "ok", "2026-12-03") for i in range(n)])
        ids = []
    con.executemany("UPDATE results SET value = value + 1, note = note || 'x' WHERE id = ?",
                    [(i,) for i in ids])
    con.commit()
    con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db-mb", type=int, default=1024)
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    args = ap.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "backupkit-benches",
                    "--example", "dedup-sizes"], cwd=ROOT, check=True)
    exe = ROOT / "target" / "release" / "examples" / "dedup-sizes"

    data = ROOT / "target" / "compare" / "data"
    if not data.is_dir():
        sys.path.insert(0, str(ROOT / "benches"))
        import compare  # noqa: E402  (generates the same tree)
        compare.generate(data, 20000, 300)
    tree_tar = WORK / "tree.tar"
    subprocess.run(["tar", "-cf", str(tree_tar), "-C", str(data.parent), data.name], check=True)

    base = WORK / "base.db"
    rows = make_db(base, args.db_mb)
    first = WORK / "results.db"
    copy_db(base, first)
    seconds = []
    for how in ["random", "contiguous", "appended"]:
        live = WORK / "live.db"
        shutil.copy(base, live)
        change(live, rows, how)
        out = WORK / f"results-1pct-{how}.db"
        copy_db(live, out)
        seconds.append(out)
        live.unlink()
    print(f"tree: {tree_tar.stat().st_size} bytes; sqlite: {first.stat().st_size} bytes, "
          f"{rows} rows; then 1% of the rows changed (random, contiguous, appended)\n")

    for avg in ["256K", "1M"]:
        subprocess.run([str(exe), "--avg", avg, str(tree_tar), str(tree_tar)], check=True)
        print()
        for second in seconds:
            subprocess.run([str(exe), "--avg", avg, str(first), str(second)], check=True)
            print()
    if not args.keep:
        shutil.rmtree(WORK)


if __name__ == "__main__":
    main()
