#!/usr/bin/env python3
"""backupkit's deduplicated repositories against restic and borg, in one run
on the same data, printing times, sizes and ratios.

    python3 benches/dedup_compare.py [--db-mb 1024]

For each tool, into a fresh local repository without encryption where the
tool allows it (restic always encrypts; borg with `--encryption none`;
backupkit's dedup repositories are not encrypted yet):

  tree   the comparison tree of benches/compare.py (target/compare/data):
         first snapshot, a no-change snapshot (time, bytes added), and the
         repository's size after both;
  sqlite a SQLite database of --db-mb MB; a copy with 1% of its rows
         updated in one contiguous run; the bytes the second snapshot added.

Each timing is the best of two runs into fresh repositories, after `sync`.
Needs restic and borgbackup (installed with apt-get when run as root).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "dedup-compare"
BK = ROOT / "target" / "release" / "backupkit"
ENV = dict(os.environ, RESTIC_PASSWORD="bench", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
           BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")


def ensure_tools() -> None:
    missing = [pkg for tool, pkg in {"restic": "restic", "borg": "borgbackup"}.items()
               if shutil.which(tool) is None]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       stdout=subprocess.DEVNULL)
    missing = [pkg for tool, pkg in {"restic": "restic", "borg": "borgbackup"}.items()
               if shutil.which(tool) is None]
    if missing:
        sys.exit(f"dedup_compare: install {' '.join(missing)} first")


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(cmd: list[str]) -> float:
    subprocess.run(["sync"], check=True)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, env=ENV, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


class Tool:
    name = ""

    def init(self, repo: Path) -> None: ...
    def backup(self, repo: Path, path: Path, n: int) -> list[str]: ...


class Backupkit(Tool):
    name = "backupkit"

    def init(self, repo: Path) -> None:
        subprocess.run([str(BK), "-q", "-r", str(repo), "init", "--dedup"], check=True)

    def backup(self, repo: Path, path: Path, n: int) -> list[str]:
        return [str(BK), "-q", "-r", str(repo), "backup", str(path)]


class BackupkitDb(Backupkit):
    def backup(self, repo: Path, path: Path, n: int) -> list[str]:
        return [str(BK), "-q", "-r", str(repo), "backup", "--db-path", str(path), "--force"]


class Restic(Tool):
    name = "restic"

    def init(self, repo: Path) -> None:
        subprocess.run(["restic", "-q", "-r", str(repo), "init"], check=True, env=ENV,
                       stdout=subprocess.DEVNULL)

    def backup(self, repo: Path, path: Path, n: int) -> list[str]:
        return ["restic", "-q", "-r", str(repo), "backup", str(path)]


class Borg(Tool):
    name = "borg"

    def init(self, repo: Path) -> None:
        subprocess.run(["borg", "init", "--encryption", "none", str(repo)], check=True, env=ENV)

    def backup(self, repo: Path, path: Path, n: int) -> list[str]:
        # zstd,3 like the other two.
        return ["borg", "create", "--compression", "zstd,3", f"{repo}::s{n}", str(path)]


def tree_case(tools: list[Tool], data: Path) -> dict[str, tuple[float, float, int, int]]:
    out = {}
    for tool in tools:
        best1 = best2 = float("inf")
        for _ in range(2):
            repo = WORK / f"{tool.name}-tree"
            shutil.rmtree(repo, ignore_errors=True)
            tool.init(repo)
            best1 = min(best1, run(tool.backup(repo, data, 1)))
            size1 = du(repo)
            best2 = min(best2, run(tool.backup(repo, data, 2)))
            size2 = du(repo)
        out[tool.name] = (best1, best2, size2, size2 - size1)
        print(f"  {tool.name:10} first {best1:6.2f} s   no change {best2:6.2f} s "
              f"(+{(size2 - size1) / 1e6:.2f} MB)   two snapshots {size2 / 1e6:7.1f} MB", flush=True)
    return out


def make_db(path: Path, mb: int) -> int:
    path.unlink(missing_ok=True)
    c = sqlite3.connect(path)
    c.execute("CREATE TABLE results(id INTEGER PRIMARY KEY, run TEXT, value REAL, note TEXT)")
    rows, batch = 0, 50_000
    while path.stat().st_size < mb * 1_000_000:
        c.executemany("INSERT INTO results(run, value, note) VALUES (?, ?, ?)",
                      ((f"run-{(rows + i) % 997}", (rows + i) * 0.5, f"sample {rows + i}")
                       for i in range(batch)))
        c.commit()
        rows += batch
    c.close()
    return rows


def db_case(tools: list[Tool], db: Path, rows: int) -> dict[str, tuple[int, int]]:
    changed = db.with_name("changed.db")
    shutil.copy(db, changed)
    c = sqlite3.connect(changed)
    first = rows // 2
    c.execute("UPDATE results SET value = value + 1 WHERE id BETWEEN ? AND ?",
              (first, first + rows // 100))
    c.commit()
    c.close()
    out = {}
    for tool in tools:
        repo = WORK / f"{tool.name}-db"
        shutil.rmtree(repo, ignore_errors=True)
        tool.init(repo)
        live = WORK / "db" / "results.db"
        live.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(db, live)
        run(tool.backup(repo, live, 1))
        size1 = du(repo)
        shutil.copy(changed, live)
        run(tool.backup(repo, live, 2))
        added = du(repo) - size1
        out[tool.name] = (size1, added)
        print(f"  {tool.name:10} first {size1 / 1e6:7.1f} MB   1% of rows updated: "
              f"+{added / 1e6:6.2f} MB ({100 * added / db.stat().st_size:.1f}% of the database)",
              flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db-mb", type=int, default=1024, help="SQLite size (0: skip)")
    args = ap.parse_args()
    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "backup-cli"], cwd=ROOT, check=True)
    WORK.mkdir(parents=True, exist_ok=True)
    data = ROOT / "target" / "compare" / "data"
    if not data.is_dir():
        sys.path.insert(0, str(ROOT / "benches"))
        import compare  # noqa: E402  (generates the same tree)
        compare.generate(data, 20000, 300)
    print(f"tree: {data} ({du(data) / 1e6:.0f} MB)")
    t = tree_case([Backupkit(), Restic(), Borg()], data)
    bk = t["backupkit"]
    for other in ("restic", "borg"):
        o = t[other]
        print(f"  vs {other}: first snapshot {o[0] / bk[0]:.2f}x faster, no change "
              f"{o[1] / bk[1]:.2f}x faster, size {bk[2] / o[2]:.3f}x of {other}'s")
    if args.db_mb:
        db = WORK / "base.db"
        rows = make_db(db, args.db_mb)
        print(f"sqlite: {db.stat().st_size / 1e6:.0f} MB, {rows} rows")
        # restic and borg back up the file; backupkit its consistent
        # `.backup` copy (the same pages, so the same content).
        db_case([BackupkitDb(), Restic(), Borg()], db, rows)
    shutil.rmtree(WORK, ignore_errors=True)


if __name__ == "__main__":
    main()
