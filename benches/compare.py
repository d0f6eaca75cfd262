#!/usr/bin/env python3
"""Times backupkit against the standard tools on the same lab-like tree.

    python3 benches/compare.py [--files 20000] [--video-mb 300] [--keep]

Generates (once, under target/compare/data) about 20,000 small CSV files,
a few hundred MB of incompressible "video" and a few compressible JSON/log
files; then, on that same data, times:

  backup:  backupkit (gzip, zstd)  vs  tar czf, tar | pigz -6, tar | zstd -T0 -3, tar --zstd
  restore: backupkit restore       vs  tar xzf, tar --zstd -xf

and prints seconds, throughput, output size, peak RSS and ratios. Needs a
release build (built here) and pigz/zstd (installed with apt-get when
missing and running as root). Page cache is warm for every tool alike.
"""
from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "target" / "compare"


def ensure_tools() -> None:
    missing = [t for t in ("pigz", "zstd", "tar", "gzip") if shutil.which(t) is None]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       stdout=subprocess.DEVNULL)
    missing = [t for t in ("pigz", "zstd", "tar", "gzip") if shutil.which(t) is None]
    if missing:
        sys.exit(f"compare: missing tools {missing}; install them (apt-get install {' '.join(missing)})")


def generate(data: Path, files: int, video_mb: int) -> int:
    marker = data / ".complete"
    if marker.exists() and marker.read_text() == f"{files} {video_mb}":
        return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    shutil.rmtree(data, ignore_errors=True)
    rng = random.Random(42)
    per_dir = 500
    for i in range(files):
        d = data / "csv" / f"session_{i // per_dir:03d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        rows = [f"{t},{rng.random():.6f},{rng.randint(0, 4095)},{rng.choice('ABCD')}"
                for t in range(rng.randint(10, 60))]
        (d / f"trial_{i:05d}.csv").write_text("time,value,pixel,label\n" + "\n".join(rows) + "\n")
    vid = data / "recordings"
    vid.mkdir(parents=True, exist_ok=True)
    chunk = 64 << 20
    left = video_mb << 20
    n = 0
    while left > 0:
        size = min(left, 100 << 20)
        with open(vid / f"cam{n}.mp4", "wb") as f:
            w = 0
            while w < size:
                k = min(chunk, size - w)
                f.write(os.urandom(k))
                w += k
        left -= size
        n += 1
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    for j in range(4):
        with open(logs / f"pipeline_{j}.log", "w") as f:
            for k in range(200_000):
                f.write(f"2026-11-24T10:{k % 60:02d}:00 INFO step={k} loss={rng.random():.5f} ok\n")
    (data / "results.json").write_text(
        "[" + ",".join(f'{{"id": {k}, "score": {rng.random():.4f}}}' for k in range(300_000)) + "]")
    marker.write_text(f"{files} {video_mb}")
    return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())


def timed(cmd: str) -> tuple[float, float]:
    """Runs a shell command; returns (seconds, peak RSS in MiB of the
    largest process it ran)."""
    start = time.perf_counter()
    proc = subprocess.Popen(["bash", "-c", cmd], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    if status != 0:
        sys.exit(f"compare: command failed ({status}): {cmd}")
    return elapsed, usage.ru_maxrss / 1024


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--video-mb", type=int, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    args = ap.parse_args()

    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "backup-cli"], cwd=ROOT, check=True)
    bk = ROOT / "target" / "release" / "backupkit"
    data = WORK / "data"
    total = generate(data, args.files, args.video_mb)
    out = WORK / "out"
    parent, name = data.parent, data.name
    print(f"data: {args.files} CSV files, {args.video_mb} MB video, logs/JSON; "
          f"{total / 2**20:.0f} MiB in all; {os.cpu_count()} cores\n")

    rows: list[tuple[str, float, float, int | None]] = []

    def backupkit_backup(compression: str) -> tuple[float, float, int]:
        repo = WORK / f"repo-{compression}"
        shutil.rmtree(repo, ignore_errors=True)
        subprocess.run([bk, "-q", "-r", repo, "init"], check=True)
        secs, rss = timed(f"'{bk}' -q -r '{repo}' backup --compression {compression} '{data}'")
        obj = next(repo.glob("snapshots/*/files.tar*"))
        return secs, rss, obj.stat().st_size

    for label, comp in (("backupkit backup gzip -6", "gzip"), ("backupkit backup zstd -3", "zstd")):
        s, r, size = backupkit_backup(comp)
        rows.append((label, s, r, size))

    fresh(out)
    tools = [
        ("tar czf (gzip -6)", f"tar -C '{parent}' -czf '{out}/a.tar.gz' {name}", out / "a.tar.gz"),
        ("tar | pigz -6", f"tar -C '{parent}' -cf - {name} | pigz -6 > '{out}/p.tar.gz'", out / "p.tar.gz"),
        ("tar | zstd -T0 -3", f"tar -C '{parent}' -cf - {name} | zstd -q -T0 -3 > '{out}/z.tar.zst'", out / "z.tar.zst"),
        ("tar --zstd", f"tar -C '{parent}' --zstd -cf '{out}/t.tar.zst' {name}", out / "t.tar.zst"),
    ]
    for label, cmd, path in tools:
        s, r = timed(cmd)
        rows.append((label, s, r, path.stat().st_size))

    restore_rows: list[tuple[str, float, float, int | None]] = []
    for comp in ("gzip", "zstd"):
        target = fresh(WORK / f"restore-{comp}")
        shutil.rmtree(target)
        s, r = timed(f"'{bk}' -q -r '{WORK}/repo-{comp}' restore latest --target '{target}'")
        restore_rows.append((f"backupkit restore ({comp})", s, r, None))
    for label, cmd in (
        ("tar xzf", f"tar -xzf '{out}/p.tar.gz' -C '{fresh(WORK / 'x-gz')}'"),
        ("tar --zstd -xf", f"tar --zstd -xf '{out}/z.tar.zst' -C '{fresh(WORK / 'x-zst')}'"),
    ):
        s, r = timed(cmd)
        restore_rows.append((label, s, r, None))

    def show(title: str, table: list[tuple[str, float, float, int | None]]) -> dict[str, tuple[float, int | None]]:
        print(f"{title:<28} {'seconds':>8} {'MiB/s':>8} {'size MiB':>9} {'peak RSS':>9}")
        for label, s, r, size in table:
            sz = f"{size / 2**20:9.1f}" if size is not None else f"{'':>9}"
            print(f"{label:<28} {s:8.2f} {total / 2**20 / s:8.1f} {sz} {r:7.1f}MB")
        print()
        return {label: (s, size) for label, s, _, size in table}

    b = show("backup", rows)
    rr = show("restore", restore_rows)

    def ratio(a: str, c: str, table: dict[str, tuple[float, int | None]]) -> str:
        return f"{table[c][0] / table[a][0]:.2f}x"

    print("ratios (> 1.00x: backupkit is faster)")
    print(f"  gzip backup  vs tar | pigz -6 : {ratio('backupkit backup gzip -6', 'tar | pigz -6', b)}"
          f"   size {b['backupkit backup gzip -6'][1] / b['tar | pigz -6'][1] * 100 - 100:+.2f}% vs pigz")
    print(f"  gzip backup  vs tar czf       : {ratio('backupkit backup gzip -6', 'tar czf (gzip -6)', b)}")
    print(f"  zstd backup  vs tar | zstd -T0: {ratio('backupkit backup zstd -3', 'tar | zstd -T0 -3', b)}"
          f"   size {b['backupkit backup zstd -3'][1] / b['tar | zstd -T0 -3'][1] * 100 - 100:+.2f}% vs zstd")
    print(f"  restore gzip vs tar xzf       : {ratio('backupkit restore (gzip)', 'tar xzf', rr)}")
    print(f"  restore zstd vs tar --zstd -xf: {ratio('backupkit restore (zstd)', 'tar --zstd -xf', rr)}")
    for p in ("out", "x-gz", "x-zst", "restore-gzip", "restore-zstd", "repo-gzip", "repo-zstd"):
        shutil.rmtree(WORK / p, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
