#!/usr/bin/env python3
"""Times backupkit against the standard tools on the same lab-like tree.

    python3 benches/compare.py [--files 20000] [--video-mb 300] [--keep]

Generates (once, under target/compare/data) about 20,000 small CSV files,
a few hundred MB of incompressible "video" and a few compressible JSON/log
files; then, on that same data, times:

  backup:  backupkit (gzip, zstd)  vs  tar czf, tar | pigz -6, tar | zstd -T0 -3, tar --zstd
  restore: backupkit restore       vs  tar xzf, tar --zstd -xf
  sqlite:  backupkit backup --db   vs  sqlite3 .backup + gzip -6, + pigz -6
  postgres: backupkit backup --db  vs  pg_dump | gzip -6, pg_dump | pigz -6
            (run under `scripts/services.sh python3 benches/compare.py`)
  mirror:  backupkit mirror  vs  cp -a and rsync -a: first copy, a no-change
           re-run, one file changed (`--only-mirror`); `--mirror-million`
           adds a generated tree of 1,000,000 8-byte files (first copy,
           no-change re-run, peak RSS); `--only-mirror-remote` mirrors to the
           test sshd (rsync and SFTP transports vs rsync -a over ssh) and to
           moto S3 (vs rclone sync)
  smb:     backup and mirror to the test Samba share without a mount vs
           smbclient (mput of the tree; tar | zstd put as one stream) and a
           kernel CIFS mount with rsync -a where the kernel allows it
           (`--only-smb`, under `BACKUPKIT_SERVICES=samba scripts/services.sh`)
  jobs:    `backupkit run` of a job with three destinations (local mirror,
           SFTP repository, rclone mirror) and a database, against each
           destination alone (`--only-jobs`, under scripts/services.sh)
  sessions: `session status-range` of N recording sessions (300 by
           default) synced to a local "network" directory with seed 003's
           inverted layout, with no import check, a shell command per
           session and seed 003's five SQLite queries, against listing both
           trees (`ls -lR`, `find -printf`) (`--only-sessions`)
  fleet:   `backupkit pull` of seed 004's results and videos from N
           devices (4 by default) on the test sshd, pulled side by side,
           against the seed's loop of `rsync -avz --partial --timeout=300`
           over the same ssh, device after device (and `rsync -a`, without
           -z): a first pull and a no-change pull (`--only-fleet [N]`, under
           scripts/services.sh)
  remote:  backup and restore to the moto S3 server and the test sshd
           vs  tar czf - | rclone rcat (SFTP) or a boto3 stream (S3),
           rclone copy, rsync, and the peak RSS
           of a several-GB snapshot (`--only-remote`, under
           `BACKUPKIT_SERVICES=remote scripts/services.sh`)

and prints seconds (best of 3, each after a `sync`), throughput, output
size, peak RSS (GNU time) and ratios. backupkit fsyncs its archive before it
commits a snapshot, so the standard tools' backups are timed with a
`sync FILE` of their output too. Needs a
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
    tools = {"pigz": "pigz", "zstd": "zstd", "tar": "tar", "gzip": "gzip", "/usr/bin/time": "time",
             "sqlite3": "sqlite3"}
    missing = [pkg for t, pkg in tools.items() if shutil.which(t) is None]
    if missing and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], check=True,
                       stdout=subprocess.DEVNULL)
    missing = [pkg for t, pkg in tools.items() if shutil.which(t) is None]
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


RUNS = 3


def timed(cmd: str, before: str = "") -> tuple[float, float]:
    """Best time and largest peak RSS of RUNS runs of `cmd`, each after
    `before` (untimed: resets outputs) and a `sync`, so that no run pays for
    the previous one's writeback."""
    best, rss = float("inf"), 0.0
    for _ in range(RUNS):
        if before:
            subprocess.run(["bash", "-c", before], check=True)
        subprocess.run(["sync"], check=True)
        s, r = timed_once(cmd)
        best, rss = min(best, s), max(rss, r)
    return best, rss


def generate_sqlite(path: Path, mb: int) -> int:
    """A results database of about `mb` MB: several tables and indexes."""
    import sqlite3

    if path.exists() and path.with_suffix(".complete").exists():
        return path.stat().st_size
    path.unlink(missing_ok=True)
    rng = random.Random(7)
    c = sqlite3.connect(path)
    c.executescript(
        "CREATE TABLE runs(id INTEGER PRIMARY KEY, started TEXT, config TEXT, status TEXT);"
        "CREATE TABLE samples(id INTEGER PRIMARY KEY, run INTEGER, t REAL, value REAL, label TEXT);"
        "CREATE TABLE events(id INTEGER PRIMARY KEY, run INTEGER, kind TEXT, message TEXT);"
        "CREATE INDEX samples_run ON samples(run, t); CREATE INDEX events_run ON events(run, kind);"
    )
    runs = 2000
    c.executemany("INSERT INTO runs VALUES (?,?,?,?)",
                  [(i, f"2026-11-{1 + i % 28:02d}T10:00:00", f"lr={rng.random():.4f};seed={i}",
                    rng.choice(["ok", "failed", "running"])) for i in range(runs)])
    batch = 50_000
    while path.stat().st_size < mb * 1_000_000:
        c.executemany("INSERT INTO samples(run, t, value, label) VALUES (?,?,?,?)",
                      [(rng.randrange(runs), rng.random() * 1000, rng.gauss(0, 1),
                        rng.choice(["left", "right", "center"])) for _ in range(batch)])
        c.executemany("INSERT INTO events(run, kind, message) VALUES (?,?,?)",
                      [(rng.randrange(runs), rng.choice(["info", "warn"]),
                        f"step {rng.randrange(10**6)} loss {rng.random():.6f}") for _ in range(batch // 5)])
        c.commit()
    c.close()
    path.with_suffix(".complete").write_text("ok")
    return path.stat().st_size


def compare_sqlite(bk: Path, mb: int) -> None:
    db = WORK / "results.db"
    size = generate_sqlite(db, mb)
    print(f"sqlite: {size / 1e6:.0f} MB database (3 tables, 2 indexes)\n")
    repo = WORK / "repo-sqlite"
    copy = WORK / "copy.db"
    rows = []
    s, r = timed(f"'{bk}' -q -r '{repo}' backup --db '{db}'",
                 before=f"rm -rf '{repo}' && '{bk}' -q -r '{repo}' init")
    stored = next(repo.glob("snapshots/*/results.db.gz")).stat().st_size
    rows.append(("backupkit backup --db (gzip -6)", s, r, stored))
    # The last row does the same work as backupkit: the seed's integrity
    # check of the copy, then compression.
    check = f"test \"$(sqlite3 '{copy}' 'PRAGMA integrity_check')\" = ok && "
    for label, tool, pre in (("sqlite3 .backup + gzip -6", "gzip -6", ""),
                             ("sqlite3 .backup + pigz -6", "pigz -6", ""),
                             (".backup + integrity_check + pigz", "pigz -6", check)):
        out = WORK / "copy.db.gz"
        s, r = timed(f"sqlite3 '{db}' \".backup '{copy}'\" && {pre}{tool} -c '{copy}' > '{out}' && sync '{out}'",
                     before=f"rm -f '{copy}' '{out}'")
        rows.append((label, s, r, out.stat().st_size))
    print(f"{'sqlite backup':<34} {'seconds':>8} {'MB/s':>8} {'size MB':>8} {'peak RSS':>9}")
    for label, s, r, sz in rows:
        print(f"{label:<34} {s:8.2f} {size / 1e6 / s:8.1f} {sz / 1e6:8.1f} {r:7.1f}MB")
    base = {label: s for label, s, _, _ in rows}
    print(f"\n  backupkit vs sqlite3 .backup + pigz -6: {base['sqlite3 .backup + pigz -6'] / base['backupkit backup --db (gzip -6)']:.2f}x"
          f" (target: 2.00x, half the time)")
    print(f"  backupkit vs sqlite3 .backup + gzip -6: {base['sqlite3 .backup + gzip -6'] / base['backupkit backup --db (gzip -6)']:.2f}x")
    print(f"  backupkit vs .backup + integrity_check + pigz: {base['.backup + integrity_check + pigz'] / base['backupkit backup --db (gzip -6)']:.2f}x (the same work)\n")
    for p in (repo, copy, WORK / "copy.db.gz"):
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def compare_postgres(bk: Path, mb: int) -> None:
    """backupkit against pg_dump | gzip / pigz on a database of about `mb`
    MB, on the throwaway server scripts/services.sh starts (or the one
    BACKUPKIT_TEST_POSTGRES_URL names)."""
    url = os.environ.get("BACKUPKIT_TEST_POSTGRES_URL")
    if not url:
        print("postgres: skipped (run under scripts/services.sh, or set BACKUPKIT_TEST_POSTGRES_URL)\n")
        return
    base = url.rsplit("/", 1)[0]
    db_url = f"{base}/bench"
    psql = f"psql -q -v ON_ERROR_STOP=1 '{url}'"
    # Rebuilt on every run: a half-built database from a failed run is never reused.
    rows = mb * 10_000
    subprocess.run(f"{psql} -c 'DROP DATABASE IF EXISTS bench' -c 'CREATE DATABASE bench'",
                   shell=True, check=True)
    subprocess.run(
        f"psql -q -v ON_ERROR_STOP=1 '{db_url}' -c \""
        "CREATE TABLE samples(id bigserial PRIMARY KEY, run int, t double precision, value double precision, label text);"
        f"INSERT INTO samples(run, t, value, label) SELECT i % 2000, random() * 1000, random(), "
        f"(ARRAY['left','right','center'])[1 + i % 3] FROM generate_series(1, {rows}) i;"
        "CREATE INDEX samples_run ON samples(run, t);"
        "CREATE TABLE events(id bigserial PRIMARY KEY, run int, message text);"
        f"INSERT INTO events(run, message) SELECT i % 2000, 'step ' || i || ' loss ' || random() FROM generate_series(1, {rows // 5}) i;\""
        " -c 'VACUUM ANALYZE'", shell=True, check=True)
    size = int(subprocess.run(f"{psql} -tAc \"SELECT pg_database_size('bench')\"", shell=True,
                              capture_output=True, text=True, check=True).stdout.strip())
    print(f"postgres: {size / 1e6:.0f} MB database (2 tables, 3 indexes)\n")
    # pg_dump reads the password from a passfile, as backupkit passes it.
    user_pw, host_db = db_url.split("://", 1)[1].split("@", 1)
    user, pw = user_pw.split(":", 1)
    host, rest = host_db.split(":", 1)
    port = rest.split("/", 1)[0]
    passfile = WORK / "pgpass"
    passfile.write_text(f"{host}:{port}:*:{user}:{pw}\n")
    passfile.chmod(0o600)
    conn = f"PGPASSFILE='{passfile}' pg_dump -h {host} -p {port} -U {user} bench"
    repo = WORK / "repo-pg"
    out = WORK / "bench.sql.gz"
    rows_out = []
    s, r = timed(f"'{bk}' -q -r '{repo}' backup --db '{db_url}'",
                 before=f"rm -rf '{repo}' && '{bk}' -q -r '{repo}' init")
    rows_out.append(("backupkit backup --db (gzip -6)", s, r, next(repo.glob("snapshots/*/bench.sql.gz")).stat().st_size))
    for label, tool in (("pg_dump | gzip -6", "gzip -6"), ("pg_dump | pigz -6", "pigz -6")):
        s, r = timed(f"{conn} | {tool} > '{out}' && sync '{out}'", before=f"rm -f '{out}'")
        rows_out.append((label, s, r, out.stat().st_size))
    # The floor: pg_dump alone, and compressing its output alone.
    plain = WORK / "bench.sql"
    subprocess.run(f"{conn} > '{plain}'", shell=True, check=True)
    s, r = timed(f"{conn} > /dev/null")
    rows_out.append(("pg_dump > /dev/null (reference)", s, r, plain.stat().st_size))
    s, r = timed(f"pigz -6 < '{plain}' > '{out}'", before=f"rm -f '{out}'")
    rows_out.append(("pigz -6 of the dump file (reference)", s, r, out.stat().st_size))
    plain.unlink(missing_ok=True)
    print(f"{'postgres backup':<34} {'seconds':>8} {'MB/s':>8} {'size MB':>8} {'peak RSS':>9}")
    for label, s, r, sz in rows_out:
        print(f"{label:<34} {s:8.2f} {size / 1e6 / s:8.1f} {sz / 1e6:8.1f} {r:7.1f}MB")
    t = {label: s for label, s, _, _ in rows_out}
    print(f"\n  backupkit vs pg_dump | pigz -6: {t['pg_dump | pigz -6'] / t['backupkit backup --db (gzip -6)']:.2f}x"
          f" (target: 2.00x, half the time)")
    print(f"  backupkit vs pg_dump | gzip -6: {t['pg_dump | gzip -6'] / t['backupkit backup --db (gzip -6)']:.2f}x\n")
    shutil.rmtree(repo, ignore_errors=True)
    out.unlink(missing_ok=True)
    passfile.unlink(missing_ok=True)


def s3_options(env) -> tuple[str, str]:
    """The test bucket and backupkit's -o options for moto."""
    return env["BACKUPKIT_TEST_S3_BUCKET"], (
        f"-o endpoint={env['BACKUPKIT_TEST_S3_ENDPOINT']} -o allow_http=true -o region=us-east-1 "
        f"-o access_key_id={env['BACKUPKIT_TEST_S3_ACCESS_KEY_ID']} "
        f"-o secret_access_key={env['BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY']}")


def rclone_s3_section(env) -> str:
    """An rclone config section `bench-s3` for moto."""
    return f"""[bench-s3]
type = s3
provider = Other
endpoint = {env['BACKUPKIT_TEST_S3_ENDPOINT']}
access_key_id = {env['BACKUPKIT_TEST_S3_ACCESS_KEY_ID']}
secret_access_key = {env['BACKUPKIT_TEST_S3_SECRET_ACCESS_KEY']}
region = us-east-1
"""


def compare_remote(bk: Path, files: int, video_mb: int, big_gb: int) -> None:
    """Backup and restore of one tree to S3 (moto) and SFTP (sshd), against
    rclone and rsync to the same servers; then a `big_gb` GB snapshot's peak
    RSS. Needs the services' BACKUPKIT_TEST_* variables."""
    env = os.environ
    need = ["BACKUPKIT_TEST_S3_ENDPOINT", "BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_RCLONE_CONFIG"]
    missing = [v for v in need if not env.get(v)]
    if missing:
        sys.exit(f"compare: {missing[0]} is not set; run under "
                 "`BACKUPKIT_SERVICES=remote scripts/services.sh python3 benches/compare.py --only-remote`")
    data = WORK / "remote-data"
    total = generate(data, files, video_mb)
    parent, name = data.parent, data.name
    print(f"remote: {files} CSV files, {video_mb} MB video, logs/JSON; {total / 2**20:.0f} MiB; "
          f"{os.cpu_count()} cores\n")
    bucket, s3_opts = s3_options(env)
    ssh_cfg, host, sdir = env["BACKUPKIT_TEST_SSH_CONFIG"], env["BACKUPKIT_TEST_SSH_HOST"], env["BACKUPKIT_TEST_SFTP_DIR"]
    sftp_opts = f"-o ssh_config={ssh_cfg}"
    # An rclone config with the test remotes plus an S3 remote on moto.
    rconf = WORK / "rclone-bench.conf"
    rconf.write_text(Path(env["BACKUPKIT_TEST_RCLONE_CONFIG"]).read_text() + f"""
{rclone_s3_section(env)}""")
    # AWS_CA_BUNDLE (set on some machines) breaks rclone's plain-http S3
    # client; the bench talks to moto on loopback over http.
    rc = f"env -u AWS_CA_BUNDLE rclone --config '{rconf}' -q"
    sftp_remote = env["BACKUPKIT_TEST_RCLONE_SFTP_REMOTE"]
    # rclone 1.60's streamed multipart uploads get a 400 from moto on
    # completion, so streams to S3 go through boto3 (benches/s3stream.py).
    venv_py = ROOT / "target" / "venv" / "bin" / "python"
    s3cat = f"'{venv_py if venv_py.exists() else sys.executable}' '{ROOT / 'benches' / 's3stream.py'}'"
    out = fresh(WORK / "remote-out")
    n = [0]

    def unique() -> str:
        n[0] += 1
        return f"bench-{os.getpid()}-{n[0]}"

    def best(setup, cmd_for) -> tuple[float, float]:
        """Best of RUNS: `setup()` (untimed) returns a name, `cmd_for(name)` is timed."""
        b, rss = float("inf"), 0.0
        for _ in range(RUNS):
            name_ = setup()
            subprocess.run(["sync"], check=True)
            s_, r_ = timed_once(cmd_for(name_))
            b, rss = min(b, s_), max(rss, r_)
        return b, rss

    def init(location: str, opts: str) -> None:
        subprocess.run(f"'{bk}' -q -r '{location}' {opts} init", shell=True, check=True)

    rows: list[tuple[str, float, float]] = []

    def s3_repo() -> str:
        loc = f"s3://{bucket}/{unique()}"
        init(loc, s3_opts)
        return loc

    def sftp_repo() -> str:
        loc = f"sftp://{host}{sdir}/{unique()}"
        init(loc, sftp_opts)
        return loc

    s3_loc = sftp_loc = ""

    def keep_s3() -> str:
        nonlocal s3_loc
        s3_loc = s3_repo()
        return s3_loc

    def keep_sftp() -> str:
        nonlocal sftp_loc
        sftp_loc = sftp_repo()
        return sftp_loc

    rows.append(("backupkit backup -> S3", *best(keep_s3, lambda loc: f"'{bk}' -q -r '{loc}' {s3_opts} backup '{data}'")))
    rows.append(("tar czf - | boto3 stream S3", *best(unique, lambda k: f"tar -C '{parent}' -czf - {name} | {s3cat} put {k}.tar.gz")))
    rows.append(("tar | pigz -6 | boto3 stream S3", *best(unique, lambda k: f"tar -C '{parent}' -cf - {name} | pigz -6 | {s3cat} put {k}.tar.gz")))
    rows.append(("rclone copy -> S3 (no compression)", *best(unique, lambda k: f"{rc} copy --transfers 8 '{data}' bench-s3:{bucket}/{k}")))
    rows.append(("backupkit backup -> SFTP", *best(keep_sftp, lambda loc: f"'{bk}' -q -r '{loc}' {sftp_opts} backup '{data}'")))
    rows.append(("tar czf - | rclone rcat SFTP", *best(unique, lambda k: f"tar -C '{parent}' -czf - {name} | {rc} rcat {sftp_remote}/{k}.tar.gz")))
    rows.append(("rsync -a -> SFTP host (no compression)", *best(unique, lambda k: f"rsync -a -e 'ssh -F {ssh_cfg}' '{data}/' {host}:{sdir}/{k}/")))

    rcat_key = f"{unique()}.tar.gz"
    subprocess.run(f"tar -C '{parent}' -cf - {name} | pigz -6 | {s3cat} put {rcat_key}", shell=True, check=True)
    copy_key = unique()
    subprocess.run(f"{rc} copy --transfers 8 '{data}' bench-s3:{bucket}/{copy_key}", shell=True, check=True)
    rsync_dir = f"{sdir}/{unique()}"
    subprocess.run(f"rsync -a -e 'ssh -F {ssh_cfg}' '{data}/' {host}:{rsync_dir}/", shell=True, check=True)
    restore_rows: list[tuple[str, float, float]] = []

    def target() -> str:
        t = out / unique()
        return str(t)

    restore_rows.append(("backupkit restore <- S3", *best(target, lambda t: f"'{bk}' -q -r '{s3_loc}' {s3_opts} restore latest --target '{t}'")))
    restore_rows.append(("boto3 stream S3 | tar xzf", *best(target, lambda t: f"mkdir -p '{t}' && {s3cat} get {rcat_key} | tar -xzf - -C '{t}'")))
    restore_rows.append(("rclone copy <- S3 (no compression)", *best(target, lambda t: f"{rc} copy --transfers 8 bench-s3:{bucket}/{copy_key} '{t}'")))
    restore_rows.append(("backupkit restore <- SFTP", *best(target, lambda t: f"'{bk}' -q -r '{sftp_loc}' {sftp_opts} restore latest --target '{t}'")))
    restore_rows.append(("rsync -a <- SFTP host", *best(target, lambda t: f"rsync -a -e 'ssh -F {ssh_cfg}' {host}:{rsync_dir}/ '{t}/'")))

    def show(title: str, table: list[tuple[str, float, float]]) -> dict[str, float]:
        print(f"{title:<40} {'seconds':>8} {'MiB/s':>8} {'peak RSS':>9}")
        for label, s_, r_ in table:
            print(f"{label:<40} {s_:8.2f} {total / 2**20 / s_:8.1f} {r_:7.1f}MB")
        print()
        return {label: s_ for label, s_, _ in table}

    b = show("remote backup", rows)
    r = show("remote restore", restore_rows)
    print("ratios (> 1.00x: backupkit is faster)")
    for mine, theirs, t in (
        ("backupkit backup -> S3", "tar czf - | boto3 stream S3", b),
        ("backupkit backup -> S3", "tar | pigz -6 | boto3 stream S3", b),
        ("backupkit backup -> S3", "rclone copy -> S3 (no compression)", b),
        ("backupkit backup -> SFTP", "tar czf - | rclone rcat SFTP", b),
        ("backupkit backup -> SFTP", "rsync -a -> SFTP host (no compression)", b),
        ("backupkit restore <- S3", "boto3 stream S3 | tar xzf", r),
        ("backupkit restore <- S3", "rclone copy <- S3 (no compression)", r),
        ("backupkit restore <- SFTP", "rsync -a <- SFTP host", r),
    ):
        print(f"  {mine:<26} vs {theirs:<40}: {t[theirs] / t[mine]:.2f}x")
    print()

    if big_gb > 0:
        big = WORK / "big-data"
        big.mkdir(parents=True, exist_ok=True)
        f = big / "recording.bin"
        if not f.exists() or f.stat().st_size != big_gb << 30:
            with open(f, "wb") as fh:
                for _ in range(big_gb * 16):
                    fh.write(os.urandom(64 << 20))
        print(f"a {big_gb} GiB snapshot (incompressible, zstd): peak RSS")
        for label, loc_fn, opts in (("S3", s3_repo, s3_opts), ("SFTP", sftp_repo, sftp_opts)):
            loc = loc_fn()
            s_, r_ = timed_once(f"'{bk}' -q -r '{loc}' {opts} backup --compression zstd '{big}'")
            t = out / unique()
            s2, r2 = timed_once(f"'{bk}' -q -r '{loc}' {opts} restore latest --target '{t}'")
            shutil.rmtree(t, ignore_errors=True)
            print(f"  {label:<5} backup {s_:6.1f} s ({big_gb * 1024 / s_:6.1f} MiB/s) peak RSS {r_:6.1f} MB;"
                  f" restore {s2:6.1f} s peak RSS {r2:6.1f} MB")
        shutil.rmtree(big, ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    subprocess.run(f"ssh -F '{ssh_cfg}' {host} 'rm -rf {sdir}/bench-*'", shell=True, check=False)


def timed_once(cmd: str) -> tuple[float, float]:
    """Runs a shell command; returns (seconds, peak RSS in MB of the largest
    process it ran).

    GNU time measures the RSS: a child forked from this (large) Python
    process would otherwise report the parent's pages as its own.
    """
    start = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "bash", "-c", cmd],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"compare: command failed ({proc.returncode}): {cmd}\n{proc.stderr}")
    return elapsed, int(proc.stderr.strip().splitlines()[-1]) / 1000


def compare_mirror(bk: Path, data: Path, label: str) -> None:
    """Mirror `data` into a local directory with backupkit, `cp -a` and
    `rsync -a`: a first copy into an empty directory, a no-change re-run,
    and a re-run after one file changed. Every timed command ends with a
    `sync`, so each pays for its own writeback (backupkit syncs its files
    before it renames them into place)."""
    area = WORK / "mirror-area"
    shutil.rmtree(area, ignore_errors=True)
    area.mkdir(parents=True)
    # Each first copy goes to a new directory, and nothing is deleted
    # until the end: on ext4, creating 20,000 files right after deleting
    # 20,000 gets slower with every round (cp -a here: 1.1 s, 6.0 s, 10.6 s
    # into one directory name removed between runs).
    commands = {
        "backupkit": "'{bk}' -q mirror '{src}' '{dst}'",
        "cp": "cp -a '{src}/.' '{dst}'",
        "rsync": "rsync -a '{src}/' '{dst}/'",
    }
    dst: dict[str, Path] = {}
    rows: list[tuple[str, float, float]] = []
    for tool, cmd in commands.items():
        best, rss = float("inf"), 0.0
        for run in range(RUNS):
            dst[tool] = area / f"{tool}-{run}"
            dst[tool].mkdir()
            subprocess.run(["sync"], check=True)
            s, r = timed_once(cmd.format(bk=bk, src=data, dst=dst[tool]) + " && sync")
            best, rss = min(best, s), max(rss, r)
        rows.append((f"first copy: {tool}", best, rss))
    first = {t: c.format(bk=bk, src=data, dst=dst[t]) for t, c in commands.items()}
    for tool in ("backupkit", "rsync"):
        s, r = timed(f"{first[tool]} && sync")
        rows.append((f"no change: {tool}", s, r))
    victim = next(p for p in sorted(data.rglob("*")) if p.is_file() and p.name != ".complete")
    original = victim.read_bytes()
    for tool in ("backupkit", "rsync"):
        # Each run sees one changed file: the content flips between two
        # versions of the same size, with a new mtime each time.
        s, r = timed(f"{first[tool]} && sync",
                     before=f"python3 -c \"import sys,os,time; p=sys.argv[1]; b=open(p,'rb').read(); "
                            f"open(p,'wb').write(bytes([b[0]^1])+b[1:]); os.utime(p)\" '{victim}'")
        rows.append((f"one file changed: {tool}", s, r))
    victim.write_bytes(original)
    print(f"{'mirror ' + label:<34} {'seconds':>8} {'peak RSS':>9}")
    for name, s, r in rows:
        print(f"{name:<34} {s:8.2f} {r:7.1f}MB")
    t = {name: s for name, s, _ in rows}
    print("ratios (> 1.00x: backupkit is faster)")
    print(f"  first copy vs cp -a      : {t['first copy: cp'] / t['first copy: backupkit']:.2f}x")
    print(f"  first copy vs rsync -a   : {t['first copy: rsync'] / t['first copy: backupkit']:.2f}x")
    print(f"  no change  vs rsync -a   : {t['no change: rsync'] / t['no change: backupkit']:.2f}x"
          "   (target: at least 2x)")
    print(f"  one change vs rsync -a   : {t['one file changed: rsync'] / t['one file changed: backupkit']:.2f}x")
    print()
    shutil.rmtree(area, ignore_errors=True)


def compare_mirror_remote(bk: Path, data: Path) -> None:
    """Mirror `data` to the test sshd (backupkit with its rsync transport
    and with SFTP alone, against `rsync -a` over ssh) and to moto S3
    (backupkit against `rclone sync`): a first copy into a new directory,
    a no-change re-run and one file changed. Needs the services'
    BACKUPKIT_TEST_* variables."""
    env = os.environ
    need = ["BACKUPKIT_TEST_S3_ENDPOINT", "BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_RCLONE_CONFIG"]
    missing = [v for v in need if not env.get(v)]
    if missing:
        sys.exit(f"compare: {missing[0]} is not set; run under "
                 "`BACKUPKIT_SERVICES=remote scripts/services.sh python3 benches/compare.py "
                 "--only-mirror-remote`")
    ssh_cfg, host, sdir = env["BACKUPKIT_TEST_SSH_CONFIG"], env["BACKUPKIT_TEST_SSH_HOST"], env["BACKUPKIT_TEST_SFTP_DIR"]
    bucket, s3_opts = s3_options(env)
    rconf = WORK / "rclone-mirror-bench.conf"
    rconf.write_text(rclone_s3_section(env))
    rc = f"env -u AWS_CA_BUNDLE rclone --config '{rconf}' -q"
    tag = f"mbench-{os.getpid()}"
    commands = {
        "SFTP: backupkit (auto)": f"'{bk}' -q mirror '{{src}}' sftp://{host}{sdir}/{tag}-bk-auto -o ssh_config={ssh_cfg}",
        "SFTP: backupkit (rsync)": f"'{bk}' -q mirror '{{src}}' sftp://{host}{sdir}/{tag}-bk-rsync -o ssh_config={ssh_cfg} -o transport=rsync",
        "SFTP: backupkit (sftp)": f"'{bk}' -q mirror '{{src}}' sftp://{host}{sdir}/{tag}-bk-sftp -o ssh_config={ssh_cfg} -o transport=sftp",
        "SFTP: rsync -a over ssh": f"rsync -a -e 'ssh -F {ssh_cfg}' '{{src}}/' {host}:{sdir}/{tag}-rsync/",
        "SFTP: rsync -a --fsync over ssh": f"rsync -a --fsync -e 'ssh -F {ssh_cfg}' '{{src}}/' {host}:{sdir}/{tag}-rsync-fsync/",
        "S3: backupkit": f"'{bk}' -q mirror '{{src}}' s3://{bucket}/{tag}-bk {s3_opts}",
        "S3: rclone sync": f"{rc} sync '{{src}}' bench-s3:{bucket}/{tag}-rclone",
    }
    rows: list[tuple[str, float, float]] = []
    for phase in ("first copy", "no change"):
        for tool, cmd in commands.items():
            subprocess.run(["sync"], check=True)
            s, r = timed_once(cmd.format(src=data))
            rows.append((f"{phase}: {tool}", s, r))
    victim = next(p for p in sorted(data.rglob("*")) if p.is_file() and p.name != ".complete")
    original = victim.read_bytes()
    for tool, cmd in commands.items():
        victim.write_bytes(bytes([original[0] ^ 1]) + original[1:])
        os.utime(victim)
        s, r = timed_once(cmd.format(src=data))
        rows.append((f"one file changed: {tool}", s, r))
    victim.write_bytes(original)
    print(f"{'mirror to the test servers':<44} {'seconds':>8} {'peak RSS':>9}")
    for name, s, r in rows:
        print(f"{name:<44} {s:8.2f} {r:7.1f}MB")
    t = {name: s for name, s, _ in rows}
    print("ratios (> 1.00x: backupkit is faster)")
    for phase, target in (("first copy", "at least 1x"), ("no change", "at least 2x"), ("one file changed", "at least 1x")):
        for way in ("auto", "rsync", "sftp"):
            print(f"  SFTP {phase:<16} backupkit ({way}) vs rsync -a : "
                  f"{t[f'{phase}: SFTP: rsync -a over ssh'] / t[f'{phase}: SFTP: backupkit ({way})']:.2f}x   (target: {target})")
    print(f"  SFTP first copy       backupkit (auto) vs rsync -a --fsync : "
          f"{t['first copy: SFTP: rsync -a --fsync over ssh'] / t['first copy: SFTP: backupkit (auto)']:.2f}x   "
          "(the same guarantee: every file synced before it is renamed into place)")
    for phase, target in (("first copy", "at least 2x"), ("no change", "at least 5x")):
        print(f"  S3   {phase:<16} backupkit vs rclone sync   : "
              f"{t[f'{phase}: S3: rclone sync'] / t[f'{phase}: S3: backupkit']:.2f}x   (target: {target})")
    print()
    # A large file that changed a little, over a 20 MB/s link: what rsync's
    # delta transfer is for.
    big = WORK / "delta-src"
    shutil.rmtree(big, ignore_errors=True)
    big.mkdir(parents=True)
    blob = bytearray(os.urandom(128 << 20))
    (big / "recording.bin").write_bytes(blob)
    delta = {
        "backupkit (auto)": f"'{bk}' -q mirror --bwlimit 20M '{big}' sftp://{host}{sdir}/{tag}-delta-auto -o ssh_config={ssh_cfg}",
        "backupkit (sftp)": f"'{bk}' -q mirror --bwlimit 20M '{big}' sftp://{host}{sdir}/{tag}-delta-sftp -o ssh_config={ssh_cfg} -o transport=sftp",
        "rsync -a": f"rsync -a --bwlimit=20m -e 'ssh -F {ssh_cfg}' '{big}/' {host}:{sdir}/{tag}-delta-rsync/",
    }
    for cmd in delta.values():
        subprocess.run(cmd, shell=True, check=True)
    blob[len(blob) // 2] ^= 1
    (big / "recording.bin").write_bytes(blob)
    print(f"{'one byte of a 128 MiB file changed, 20 MB/s':<44} {'seconds':>8} {'peak RSS':>9}")
    for tool, cmd in delta.items():
        s, r = timed_once(cmd)
        print(f"{tool:<44} {s:8.2f} {r:7.1f}MB")
    print()
    shutil.rmtree(big, ignore_errors=True)
    subprocess.run(f"ssh -F '{ssh_cfg}' {host} 'rm -rf {sdir}/{tag}-*'", shell=True, check=False)
    subprocess.run(f"{rc} purge bench-s3:{bucket}/{tag}-bk; {rc} purge bench-s3:{bucket}/{tag}-rclone",
                   shell=True, check=False)


def compare_smb(bk: Path, data: Path) -> None:
    """Backup and mirror of `data` to the test Samba share, without a mount:
    backupkit (its own SMB client) against smbclient (`mput` of the tree,
    and a `tar | zstd` stream put as one file) and, where the kernel has
    CIFS, a mount with `rsync -a`. A first copy and a no-change re-run.
    Needs the services' BACKUPKIT_TEST_SMB_* variables."""
    env = os.environ
    need = ["BACKUPKIT_TEST_SMB_URL", "BACKUPKIT_TEST_SMB_PASSWORD", "BACKUPKIT_TEST_SMB_PORT",
            "BACKUPKIT_TEST_SMB_DIR"]
    missing = [v for v in need if not env.get(v)]
    if missing:
        sys.exit(f"compare: {missing[0]} is not set; run under "
                 "`BACKUPKIT_SERVICES=samba scripts/services.sh python3 benches/compare.py --only-smb`")
    url, port, disk = env["BACKUPKIT_TEST_SMB_URL"], env["BACKUPKIT_TEST_SMB_PORT"], Path(env["BACKUPKIT_TEST_SMB_DIR"])
    user = url.removeprefix("smb://").split("@", 1)[0]
    share = url.rsplit("/", 1)[1]
    tag = f"smbbench-{os.getpid()}"
    pw = "-o password_env=BACKUPKIT_TEST_SMB_PASSWORD"
    # The password reaches smbclient through its environment (PASSWD), never
    # a command line.
    smbc = f"PASSWD=\"$BACKUPKIT_TEST_SMB_PASSWORD\" smbclient -p {port} -U {user} //127.0.0.1/{share}"

    def mput(dest: str, same: bool = False) -> str:
        prot = "--client-protection=encrypt " if same else ""
        synced = f" && sync -f '{disk}'" if same else ""
        return (f"{smbc} {prot}-c 'mkdir {dest}; cd {dest}; lcd {data}; prompt; recurse; mput *' >/dev/null"
                f"{synced}")

    def fresh(name: str) -> str:
        shutil.rmtree(disk / name, ignore_errors=True)
        return name

    rows: list[tuple[str, float, float]] = []
    for i in range(2):
        for phase, repeat in (("first copy", False), ("no change", True)):
            if phase == "first copy":
                dirs = {k: fresh(f"{tag}-{k}-{i}") for k in ("bk", "mirror", "mput", "mput2", "tar", "tar2")}
                subprocess.run(f"'{bk}' -q -r {url}/{dirs['bk']} {pw} init", shell=True, check=True)
            cmds = {
                "backup: backupkit (zstd)": f"'{bk}' -q -r {url}/{dirs['bk']} {pw} backup --compression zstd '{data}'",
                "backup: tar | zstd -T0 -3 | smbclient put": (
                    f"tar -C '{data.parent}' -cf - '{data.name}' | zstd -q -T0 -3 | "
                    f"{smbc} -c 'mkdir {dirs['tar']}; put /dev/stdin {dirs['tar']}/data.tar.zst' >/dev/null"),
                # The same guarantees as backupkit's: every message encrypted,
                # the data on the server's disk before the command ends.
                "backup: the same, encrypted + synced": (
                    f"tar -C '{data.parent}' -cf - '{data.name}' | zstd -q -T0 -3 | "
                    f"{smbc} --client-protection=encrypt -c 'mkdir {dirs['tar2']}; "
                    f"put /dev/stdin {dirs['tar2']}/data.tar.zst' >/dev/null && "
                    f"sync '{disk}/{dirs['tar2']}/data.tar.zst'"),
                "mirror: backupkit": f"'{bk}' -q {pw} mirror '{data}' {url}/{dirs['mirror']}",
                "mirror: smbclient mput (all again)": mput(dirs["mput"]),
                "mirror: the same, encrypted + synced": mput(dirs["mput2"], same=True),
            }
            for tool, cmd in cmds.items():
                subprocess.run(["sync"], check=True)
                s, r = timed_once(cmd)
                rows.append((f"{phase}: {tool} #{i}", s, r))
    best: dict[str, tuple[float, float]] = {}
    for name, s, r in rows:
        key = name.rsplit(" #", 1)[0]
        if key not in best or s < best[key][0]:
            best[key] = (s, r)
    # A kernel CIFS mount with rsync -a, where this machine can mount one.
    mount_note = ""
    has_cifs = "cifs" in Path("/proc/filesystems").read_text()
    if not has_cifs:
        mount_note = "kernel CIFS mount + rsync -a: skipped (this kernel has no cifs filesystem)"
    elif os.geteuid() != 0:
        mount_note = "kernel CIFS mount + rsync -a: skipped (mounting needs root)"
    else:
        mnt = WORK / "cifs-mnt"
        mnt.mkdir(parents=True, exist_ok=True)
        cred = WORK / "cifs-cred"
        cred.write_text(f"username={user}\npassword={env['BACKUPKIT_TEST_SMB_PASSWORD']}\n")
        cred.chmod(0o600)
        ok = subprocess.run(["mount", "-t", "cifs", f"//127.0.0.1/{share}", str(mnt), "-o",
                             f"port={port},credentials={cred}"], capture_output=True)
        if ok.returncode != 0:
            mount_note = f"kernel CIFS mount + rsync -a: skipped (mount failed: {ok.stderr.decode().strip()})"
        else:
            try:
                dest = mnt / f"{tag}-rsync"
                for phase in ("first copy", "no change"):
                    s, r = timed_once(f"rsync -a '{data}/' '{dest}/'")
                    best[f"{phase}: kernel mount + rsync -a"] = (s, r)
            finally:
                subprocess.run(["umount", str(mnt)], check=False)
        cred.unlink()
    size = sum(p.stat().st_size for p in data.rglob("*") if p.is_file())
    print(f"{'to the Samba share on 127.0.0.1 (best of 2)':<52} {'seconds':>8} {'MiB/s':>7} {'peak RSS':>9}")
    for name, (s, r) in best.items():
        print(f"{name:<52} {s:8.2f} {size / 2**20 / s:7.1f} {r:7.1f}MB")
    if mount_note:
        print(mount_note)
    t = {k: v[0] for k, v in best.items()}
    print("ratios (> 1.00x: backupkit is faster)")
    for phase in ("first copy", "no change"):
        print(f"  {phase:<11} backup backupkit vs tar|zstd|smbclient put : "
              f"{t[f'{phase}: backup: tar | zstd -T0 -3 | smbclient put'] / t[f'{phase}: backup: backupkit (zstd)']:.2f}x   (target: at least 1x)")
        print(f"  {phase:<11} backup backupkit vs it encrypted + synced  : "
              f"{t[f'{phase}: backup: the same, encrypted + synced'] / t[f'{phase}: backup: backupkit (zstd)']:.2f}x")
        print(f"  {phase:<11} mirror backupkit vs smbclient mput         : "
              f"{t[f'{phase}: mirror: smbclient mput (all again)'] / t[f'{phase}: mirror: backupkit']:.2f}x   (target: at least 1x)")
        print(f"  {phase:<11} mirror backupkit vs mput encrypted + synced: "
              f"{t[f'{phase}: mirror: the same, encrypted + synced'] / t[f'{phase}: mirror: backupkit']:.2f}x")
        if f"{phase}: kernel mount + rsync -a" in t:
            print(f"  {phase:<11} mirror backupkit vs mount + rsync -a       : "
                  f"{t[f'{phase}: kernel mount + rsync -a'] / t[f'{phase}: mirror: backupkit']:.2f}x")
    print()
    for p in disk.glob(f"{tag}-*"):
        shutil.rmtree(p, ignore_errors=True)


def compare_jobs(bk: Path, data: Path, db_mb: int) -> None:
    """`backupkit run` of one job with three destinations (a local mirror,
    an SFTP snapshot repository and an rclone mirror) and an SQLite source,
    against each destination run alone; fresh destinations every time, with
    the repository gzip-compressed (the default) and zstd-compressed. The
    database is dumped once per run, whatever the destinations. Prints the
    CPU time too (backupkit and the rclone and ssh it runs; the test sshd's
    own share is not counted): on a machine with few cores, three
    destinations side by side can finish no sooner than their CPU time
    divided by the cores. Needs the services' BACKUPKIT_TEST_* variables."""
    env = os.environ
    need = ["BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_RCLONE_CONFIG", "BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE"]
    missing = [v for v in need if not env.get(v)]
    if missing:
        sys.exit(f"compare: {missing[0]} is not set; run under "
                 "`BACKUPKIT_SERVICES=remote scripts/services.sh python3 benches/compare.py --only-jobs`")
    ssh_cfg, host, sdir = env["BACKUPKIT_TEST_SSH_CONFIG"], env["BACKUPKIT_TEST_SSH_HOST"], env["BACKUPKIT_TEST_SFTP_DIR"]
    rconf, rremote = env["BACKUPKIT_TEST_RCLONE_CONFIG"], env["BACKUPKIT_TEST_RCLONE_LOCAL_REMOTE"]
    db = WORK / "jobs.db"
    generate_sqlite(db, db_mb)
    runs = 0

    def config(tag: str, compression: str) -> Path:
        path = WORK / f"jobs-{tag}.yaml"
        path.write_text(f"""jobs:
  lab:
    sources:
      - {data}
      - database: {db}
    destinations:
      local:
        mirror: {WORK}/jobs-out/{tag}/mirror
      sftp:
        repository: sftp://{host}{sdir}/{tag}-repo
        init: true
        compression: {compression}
        options: {{ssh_config: {ssh_cfg}}}
      rclone:
        mirror: rclone:{rremote}/{tag}-mirror
        options: {{rclone_config: {rconf}}}
""")
        return path

    def one(only: list[str], compression: str) -> tuple[float, float, float, str]:
        nonlocal runs
        runs += 1
        tag = f"jbench-{os.getpid()}-{runs}"
        cfg = config(tag, compression)
        flags = " ".join(f"--only {o}" for o in only)
        log = WORK / f"jobs-{tag}.log"
        subprocess.run(["sync"], check=True)
        start = time.perf_counter()
        proc = subprocess.run(
            ["/usr/bin/time", "-f", "%M %U %S", "bash", "-c", f"'{bk}' --config '{cfg}' run {flags} 2> '{log}'"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        elapsed = time.perf_counter() - start
        if proc.returncode != 0:
            sys.exit(f"compare: the job failed: {log.read_text()}")
        rss, user, sys_ = proc.stderr.split()[-3:]
        return elapsed, int(rss) / 1000, float(user) + float(sys_), log.read_text()

    cores = os.cpu_count() or 1
    for compression in ("gzip", "zstd"):
        rows = []
        for dest in ("local", "sftp", "rclone"):
            s, r, cpu, _ = one([dest], compression)
            rows.append((f"{dest} alone", s, r, cpu))
        s, r, cpu, log = one([], compression)
        rows.append(("all three (one run)", s, r, cpu))
        dumps = log.count("once for all destinations")
        print(f"{'job: data + ' + str(db_mb) + ' MB SQLite, repository ' + compression:<44} "
              f"{'seconds':>8} {'CPU s':>7} {'peak RSS':>9}")
        for name, s, r, cpu in rows:
            print(f"{name:<44} {s:8.2f} {cpu:7.1f} {r:7.1f}MB")
        alone = [row for row in rows if row[0].endswith("alone")]
        slowest = max(row[1] for row in alone)
        together, cpu_all = rows[-1][1], rows[-1][3]
        print(f"  all three / slowest alone : {together / slowest:.2f}x   (target: at most 1.2x)")
        print(f"  all three / the three one after another : {together / sum(row[1] for row in alone):.2f}x")
        print(f"  bound on {cores} cores: CPU time of all three / cores = {cpu_all / cores:.1f} s "
              f"= {cpu_all / cores / slowest:.2f}x the slowest alone")
        print(f"  database dumps in the three-destination run: {dumps} (target: 1)")
        print()
    shutil.rmtree(WORK / "jobs-out", ignore_errors=True)
    subprocess.run(f"ssh -F '{ssh_cfg}' {host} 'rm -rf {sdir}/jbench-* {sdir}/jt-*'", shell=True, check=False)
    local_root = rremote.split(":", 1)[1]
    subprocess.run(f"rm -rf {local_root}/jbench-* {local_root}/jt-*", shell=True, check=False)


def compare_sessions(bk: Path, sessions: int) -> None:
    """`session status-range` against listing the same trees. Every
    session has 3 small videos and 2 side files; the destination holds
    them under `{session_date}/{participant_id}`."""
    import sqlite3
    base = fresh(WORK / "sessions")
    src, dst = base / "data", base / "network"
    dst.mkdir()
    rng = random.Random(3)
    record = sqlite3.connect(base / "record.db")
    tables = ("subject", "session", "recording", "multi_camera_recording", "single_camera_video")
    for t in tables:
        record.execute(f"CREATE TABLE {t} (participant_id TEXT, session_date TEXT)")
    prefixes = ("m", "p", "b", "s", "TR", "TF")
    made = 0
    while made < sessions:
        pid = f"{rng.choice(prefixes)}{rng.randrange(1, 60):03d}"
        day = f"2025{rng.randrange(1, 13):02d}{rng.randrange(1, 29):02d}"
        d = src / pid / day
        if d.exists():
            continue
        d.mkdir(parents=True)
        for k in range(3):
            (d / f"cam{k}.mp4").write_bytes(rng.randbytes(4096))
        (d / "events.csv").write_text("t,event\n" * 50)
        (d / "notes.txt").write_text(f"{pid} {day}\n")
        for t in tables:
            record.execute(f"INSERT INTO {t} VALUES (?, ?)", (pid, day))
        made += 1
    record.commit()
    record.close()

    def config(imported: str) -> Path:
        path = base / f"config-{len(list(base.glob('config-*')))}.yaml"
        path.write_text(f"""sessions:
  recordings:
    source: {src}
    layout: "{{participant_id}}/{{session_date}}"
    filters: {{participant_prefixes: [{", ".join(prefixes)}]}}
{imported}    destinations:
      network:
        mirror: {dst}
        layout: "{{session_date}}/{{participant_id}}"
""")
        return path

    plain = config("")
    command = config("    imported: {command: \"test -n {participant_id}\"}\n")
    queries = "".join(
        f"        - SELECT 1 FROM {t} WHERE participant_id = :participant_id AND session_date = :session_date\n"
        for t in tables)
    sql = config(f"    imported:\n      database: {base / 'record.db'}\n      queries:\n{queries}")
    subprocess.run([str(bk), "-q", "--config", str(plain), "session", "batch", "20250101", "20251231"],
                   check=True, stdout=subprocess.DEVNULL)
    rows = [
        ("ls -lR source destination", f"ls -lR '{src}' '{dst}'"),
        ("find -printf both trees", f"find '{src}' '{dst}' -printf '%s %p\\n'"),
        ("session list", f"'{bk}' --config '{plain}' session list --json"),
        ("status-range, no check", f"'{bk}' --config '{plain}' session status-range --json"),
        ("status-range, command", f"'{bk}' --config '{command}' session status-range --json"),
        ("status-range, 5 SQLite", f"'{bk}' --config '{sql}' session status-range --json"),
    ]
    out = subprocess.run([str(bk), "--config", str(sql), "session", "status-range", "--json"],
                         check=True, capture_output=True, text=True).stdout
    import json
    safe = sum(1 for r in json.loads(out) if r["safe"])
    print(f"sessions: {sessions} of 5 files; {safe} safe with the SQLite check")
    times = {}
    for label, cmd in rows:
        s, rss = timed(cmd)
        times[label] = s
        print(f"  {label:<28} {s:8.3f} s {rss:7.1f}MB")
    listing = times["ls -lR source destination"]
    print("ratios (<= 1.00x: no slower than listing both trees)")
    for label in ("status-range, no check", "status-range, command", "status-range, 5 SQLite"):
        print(f"  {label:<28} {times[label] / listing:6.2f}x ls -lR")
    shutil.rmtree(base, ignore_errors=True)


def compare_fleet(bk: Path, devices: int, files: int, video_mb: int) -> None:
    """Seed 004: every device's results (small files) and videos (large
    ones) pulled from the test sshd, backupkit against the seed's rsync
    loop. Each device is a directory tree on that server."""
    env = os.environ
    need = ["BACKUPKIT_TEST_SFTP_URL", "BACKUPKIT_TEST_SSH_KEY", "BACKUPKIT_TEST_SFTP_DIR",
            "BACKUPKIT_TEST_SSH_CONFIG", "BACKUPKIT_TEST_SSH_KNOWN_HOSTS"]
    missing = [v for v in need if not env.get(v)]
    if missing:
        sys.exit(f"compare: {missing[0]} is not set; run under "
                 "`BACKUPKIT_SERVICES=sshd scripts/services.sh python3 benches/compare.py --only-fleet`")
    login = env["BACKUPKIT_TEST_SFTP_URL"].removeprefix("sftp://").split("/", 1)[0]
    ssh_cfg, host = env["BACKUPKIT_TEST_SSH_CONFIG"], env["BACKUPKIT_TEST_SSH_HOST"]
    base = Path(env["BACKUPKIT_TEST_SFTP_DIR"]) / f"fleet-bench-{os.getpid()}"
    rng = random.Random(4)
    total = 0
    for n in range(1, devices + 1):
        etho = f"{n:03d}c0ffee{n:03d}"
        for run in range(4):
            stamp = f"2026-12-0{run + 1}_10-00-00"
            res = base / f"dev{n}/results/{etho}/ETHOSCOPE_{n:03d}/{stamp}"
            vid = base / f"dev{n}/videos/{etho}/ETHOSCOPE_{n:03d}/{stamp}"
            res.mkdir(parents=True)
            vid.mkdir(parents=True)
            for i in range(files // devices // 4):
                body = "".join(f"{rng.random():.6f},{i},{run}\n" for _ in range(rng.randint(20, 400)))
                (res / f"tracking_{i:05d}.csv").write_text(body)
                total += len(body)
            for i in range(2):
                blob = rng.randbytes((video_mb << 20) // devices // 8)
                (vid / f"whole_{i:03d}.h264").write_bytes(blob)
                total += len(blob)
    subprocess.run(["chmod", "-R", "a+rX", str(base)], check=True)
    print(f"fleet: {devices} devices, {files} result files and {video_mb} MB of video in all "
          f"({total / 2**20:.0f} MiB) on the test sshd; {os.cpu_count()} cores\n")
    out = WORK / "fleet-out"
    config = WORK / "fleet.yaml"
    device_lines = "".join(
        f"        - {{id: dev{n}, url: 'ssh://{login}{base}/dev{n}'}}\n" for n in range(1, devices + 1))
    config.write_text(
        "jobs:\n  fleet:\n    pull:\n      devices:\n" + device_lines +
        f"      kinds:\n        results: {{remote: results, local: {out}/bk/results}}\n"
        f"        videos: {{remote: videos, local: {out}/bk/videos}}\n"
        f"      concurrency: {devices}\n"
        f"      identity_file: {env['BACKUPKIT_TEST_SSH_KEY']}\n"
        f"      known_hosts: {env['BACKUPKIT_TEST_SSH_KNOWN_HOSTS']}\n"
        "      options: {ssh_config: /dev/null}\n")

    def rsync_loop(flags: str, dest: str) -> str:
        return f"mkdir -p {out}/{dest}/results {out}/{dest}/videos && " + " && ".join(
            f"rsync {flags} -e 'ssh -F {ssh_cfg}' {host}:{base}/dev{n}/{kind}/ {out}/{dest}/{kind}/ >/dev/null"
            for n in range(1, devices + 1) for kind in ("results", "videos"))

    sftp_config = WORK / "fleet-sftp.yaml"
    sftp_config.write_text(config.read_text().replace(f"{out}/bk/", f"{out}/bk-sftp/")
                           .replace("{ssh_config: /dev/null}", "{ssh_config: /dev/null, transport: sftp}"))
    rsync_config = WORK / "fleet-rsync.yaml"
    rsync_config.write_text(config.read_text().replace(f"{out}/bk/", f"{out}/bk-rsync/")
                            .replace("{ssh_config: /dev/null}", "{ssh_config: /dev/null, transport: rsync}"))
    commands = {
        "backupkit pull (devices side by side)": f"'{bk}' -q --config '{config}' pull fleet",
        "backupkit pull (rsync for every batch)": f"'{bk}' -q --config '{rsync_config}' pull fleet",
        "backupkit pull (SFTP only, no rsync)": f"'{bk}' -q --config '{sftp_config}' pull fleet",
        "rsync -avz --partial --timeout=300 loop": rsync_loop("-avz --partial --timeout=300", "rsync-z"),
        "rsync -a loop (no -z)": rsync_loop("-a", "rsync-a"),
        "rsync -a --fsync loop (files synced, as backupkit)": rsync_loop("-a --fsync", "rsync-fsync"),
    }
    shutil.rmtree(out, ignore_errors=True)
    rows: list[tuple[str, float, float]] = []
    dests = {tool: out / d for tool, d in zip(commands, ("bk", "bk-rsync", "bk-sftp", "rsync-z", "rsync-a", "rsync-fsync"))}
    try:
        # Best of 3, each first pull into an empty destination, after a sync.
        for phase in ("first pull", "no-change pull"):
            for tool, cmd in commands.items():
                runs = []
                for _ in range(3):
                    if phase == "first pull":
                        shutil.rmtree(dests[tool], ignore_errors=True)
                    subprocess.run(["sync"], check=True)
                    runs.append(timed_once(cmd))
                sec, rss = min(runs)
                rows.append((f"{phase}: {tool}", sec, rss))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{'pull from the devices':<58} {'seconds':>8} {'peak RSS':>9}")
    for name, sec, rss in rows:
        print(f"{name:<58} {sec:8.2f} {rss:7.1f}MB")
    t = {name: sec for name, sec, _ in rows}
    print("ratios (> 1.00x: backupkit is faster; target: at least 1x in both)")
    for phase in ("first pull", "no-change pull"):
        for way in ("devices side by side", "rsync for every batch", "SFTP only, no rsync"):
            bkt = t[f"{phase}: backupkit pull ({way})"]
            print(f"  {phase:<15} backupkit ({way}) vs the seed's rsync -avz loop: "
                  f"{t[f'{phase}: rsync -avz --partial --timeout=300 loop'] / bkt:.2f}x   "
                  f"vs rsync -a loop: {t[f'{phase}: rsync -a loop (no -z)'] / bkt:.2f}x   "
                  f"vs rsync -a --fsync loop: "
                  f"{t[f'{phase}: rsync -a --fsync loop (files synced, as backupkit)'] / bkt:.2f}x")
    print()
    shutil.rmtree(out, ignore_errors=True)


def generate_million(data: Path, files: int) -> None:
    """`files` files of 8 bytes, 1,000 per directory (made once)."""
    marker = data / ".complete"
    if marker.exists() and marker.read_text() == str(files):
        return
    shutil.rmtree(data, ignore_errors=True)
    for i in range(files):
        d = data / f"d{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        with open(d / f"f{i % 1000:03d}", "wb") as f:
            f.write(b"%08d" % (i % 10**8))
    marker.write_text(str(files))


def fresh(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--video-mb", type=int, default=300)
    ap.add_argument("--keep", action="store_true", help="keep the generated data")
    ap.add_argument("--sqlite-mb", type=int, default=200, help="size of the SQLite comparison (0: skip)")
    ap.add_argument("--only-sqlite", action="store_true", help="run only the SQLite comparison")
    ap.add_argument("--postgres-mb", type=int, default=200,
                    help="size of the PostgreSQL comparison (0: skip; needs a server, see compare_postgres)")
    ap.add_argument("--only-databases", action="store_true", help="run only the database comparisons")
    ap.add_argument("--only-remote", action="store_true",
                    help="run only the remote comparison (S3 and SFTP; needs scripts/services.sh)")
    ap.add_argument("--only-mirror", action="store_true", help="run only the mirror comparison")
    ap.add_argument("--mirror-million", type=int, default=0, metavar="N",
                    help="also mirror a generated tree of N 8-byte files (the issue's 1,000,000)")
    ap.add_argument("--only-mirror-remote", action="store_true",
                    help="run only the mirror comparison to the test sshd and moto S3 (under scripts/services.sh)")
    ap.add_argument("--only-smb", action="store_true",
                    help="run only the SMB comparison (under BACKUPKIT_SERVICES=samba scripts/services.sh)")
    ap.add_argument("--only-jobs", action="store_true",
                    help="run only `backupkit run` of a job with three destinations against each alone")
    ap.add_argument("--jobs-db-mb", type=int, default=100)
    ap.add_argument("--only-sessions", type=int, nargs="?", const=300, default=0, metavar="N",
                    help="run only `session status-range` of N sessions (300) against listing them")
    ap.add_argument("--only-fleet", type=int, nargs="?", const=4, default=0, metavar="N",
                    help="run only the device-fleet comparison, with N devices (default 4)")
    ap.add_argument("--remote-files", type=int, default=2_000)
    ap.add_argument("--remote-video-mb", type=int, default=200)
    ap.add_argument("--big-gb", type=int, default=3, help="size of the peak-RSS snapshot (0: skip)")
    args = ap.parse_args()

    ensure_tools()
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "backup-cli"], cwd=ROOT, check=True)
    bk = ROOT / "target" / "release" / "backupkit"
    if args.only_remote:
        compare_remote(bk, args.remote_files, args.remote_video_mb, args.big_gb)
        return
    if args.only_sessions:
        compare_sessions(bk, args.only_sessions)
        return
    if args.only_fleet:
        compare_fleet(bk, args.only_fleet, args.files, args.video_mb)
        return
    if args.only_jobs:
        data = WORK / "data"
        total = generate(data, args.files, args.video_mb)
        print(f"data: {args.files} CSV files, {args.video_mb} MB video; {total / 2**20:.0f} MiB\n")
        compare_jobs(bk, data, args.jobs_db_mb)
        return
    if args.only_smb:
        data = WORK / "data"
        total = generate(data, args.files, args.video_mb)
        print(f"data: {args.files} CSV files, {args.video_mb} MB video; {total / 2**20:.0f} MiB\n")
        compare_smb(bk, data)
        return
    if args.only_mirror_remote:
        data = WORK / "data"
        total = generate(data, args.files, args.video_mb)
        print(f"data: {args.files} CSV files, {args.video_mb} MB video; {total / 2**20:.0f} MiB\n")
        compare_mirror_remote(bk, data)
        return
    if args.only_mirror:
        data = WORK / "data"
        total = generate(data, args.files, args.video_mb)
        print(f"data: {args.files} CSV files, {args.video_mb} MB video; {total / 2**20:.0f} MiB\n")
        compare_mirror(bk, data, f"{args.files} files")
        if args.mirror_million:
            big = WORK / "million"
            generate_million(big, args.mirror_million)
            compare_mirror(bk, big, f"{args.mirror_million} 8-byte files")
        return
    if args.sqlite_mb > 0:
        compare_sqlite(bk, args.sqlite_mb)
    if args.only_sqlite:
        return
    if args.postgres_mb > 0:
        compare_postgres(bk, args.postgres_mb)
    if args.only_databases:
        return
    data = WORK / "data"
    total = generate(data, args.files, args.video_mb)
    out = WORK / "out"
    parent, name = data.parent, data.name
    print(f"data: {args.files} CSV files, {args.video_mb} MB video, logs/JSON; "
          f"{total / 2**20:.0f} MiB in all; {os.cpu_count()} cores\n")

    rows: list[tuple[str, float, float, int | None]] = []

    def backupkit_backup(compression: str) -> tuple[float, float, int]:
        repo = WORK / f"repo-{compression}"
        secs, rss = timed(f"'{bk}' -q -r '{repo}' backup --compression {compression} '{data}'",
                          before=f"rm -rf '{repo}' && '{bk}' -q -r '{repo}' init")
        obj = next(repo.glob("snapshots/*/files.tar*"))
        return secs, rss, obj.stat().st_size

    for label, comp in (("backupkit backup gzip -6", "gzip"), ("backupkit backup zstd -3", "zstd")):
        s, r, size = backupkit_backup(comp)
        rows.append((label, s, r, size))

    fresh(out)
    # backupkit syncs its archive to disk before it commits a snapshot; the
    # standard tools are timed with the same `sync FILE` so both are durable.
    tools = [
        ("tar czf (gzip -6)", f"tar -C '{parent}' -czf '{out}/a.tar.gz' {name}", out / "a.tar.gz"),
        ("tar | pigz -6", f"tar -C '{parent}' -cf - {name} | pigz -6 > '{out}/p.tar.gz'", out / "p.tar.gz"),
        ("tar | zstd -T0 -3", f"tar -C '{parent}' -cf - {name} | zstd -q -T0 -3 > '{out}/z.tar.zst'", out / "z.tar.zst"),
        ("tar --zstd", f"tar -C '{parent}' --zstd -cf '{out}/t.tar.zst' {name}", out / "t.tar.zst"),
    ]
    for label, cmd, path in tools:
        s, r = timed(f"{cmd} && sync '{path}'", before=f"rm -f '{path}'")
        rows.append((label, s, r, path.stat().st_size))

    # Restores go to a tmpfs when one can be mounted: on ext4, creating 20,000
    # files right after deleting 20,000 slows down with every round (inode
    # allocation skips recently deleted inodes), which measures the disk's
    # history rather than the tools.
    rdir = WORK / "restore-area"
    rdir.mkdir(parents=True, exist_ok=True)
    on_tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2g", "tmpfs", str(rdir)],
                              stderr=subprocess.DEVNULL).returncode == 0
    print(f"restores write to {'a tmpfs' if on_tmpfs else 'the disk (mounting a tmpfs needs root)'}\n")
    restore_rows: list[tuple[str, float, float, int | None]] = []
    for comp in ("gzip", "zstd"):
        target = rdir / f"restore-{comp}"
        s, r = timed(f"'{bk}' -q -r '{WORK}/repo-{comp}' restore latest --target '{target}'",
                     before=f"rm -rf '{target}'")
        restore_rows.append((f"backupkit restore ({comp})", s, r, None))
    for label, archive, flags in (
        ("tar xzf", out / "p.tar.gz", "-xzf"),
        ("tar --zstd -xf", out / "z.tar.zst", "--zstd -xf"),
    ):
        target = rdir / f"x-{archive.name}"
        s, r = timed(f"tar {flags} '{archive}' -C '{target}'",
                     before=f"rm -rf '{target}' && mkdir -p '{target}'")
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
    if on_tmpfs:
        subprocess.run(["umount", str(rdir)], check=False)
    for p in ("out", "restore-area", "repo-gzip", "repo-zstd"):
        shutil.rmtree(WORK / p, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
