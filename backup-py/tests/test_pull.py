"""Device fleets from Python: backupkit.pull, with devices that are local
directories and one device on the test sshd (strict host keys)."""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

import backupkit
from conftest import service_env


def make_device(root: Path, n: int) -> Path:
    dev = root / f"dev{n}"
    for kind in ("results", "videos"):
        d = dev / kind / f"id{n}" / f"ETHOSCOPE_00{n}" / "2026-12-01_10-00-00"
        d.mkdir(parents=True)
        (d / "run.db").write_bytes(bytes((i * n) % 251 for i in range(5000)))
    return dev


def write_config(root: Path, devices: str, extra: str = "") -> Path:
    config = root / "backupkit.yaml"
    config.write_text(
        f"""\
jobs:
  fleet:
    pull:
      devices:
{devices}
      kinds:
        results: {{remote: results, local: {root / "local/results"}}}
        videos: {{remote: videos, local: {root / "local/videos"}}}
{extra}
  plain:
    sources: [{root}]
    destinations:
      m: {{mirror: {root / "plain-out"}}}
"""
    )
    return config


def test_pull_selects_devices_and_kinds(tmp_path: Path) -> None:
    for n in (1, 2):
        make_device(tmp_path, n)
    devices = "".join(
        f"        - {{id: id{n}, name: ETHOSCOPE_00{n}, url: {tmp_path / f'dev{n}'}}}\n"
        for n in (1, 2)
    )
    config = write_config(tmp_path, devices)
    events: list[dict[str, object]] = []
    results = backupkit.pull("fleet", config=config, progress=events.append)
    assert [r.destination for r in results] == [
        "id1.results",
        "id1.videos",
        "id2.results",
        "id2.videos",
    ]
    assert all(r.ok and r.kind == "pull" and r.files == 1 for r in results)
    assert (tmp_path / "local/videos/id2/ETHOSCOPE_002/2026-12-01_10-00-00/run.db").is_file()
    assert any(e.get("destination") == "id1" for e in events), events

    # The seed's `-e 002 --results-only`: nothing changed, nothing copied.
    again = backupkit.pull("fleet", devices=["002"], kinds=["results"], config=config)
    assert [(r.destination, r.files) for r in again] == [("id2.results", 0)]

    with pytest.raises(ValueError, match="has no `pull:`"):
        backupkit.pull("plain", config=config)
    failed = backupkit.pull("fleet", devices=["009"], config=config)
    assert len(failed) == 1 and not failed[0].ok
    assert "no device" in (failed[0].error or "")


def test_pull_from_the_test_sshd(tmp_path: Path) -> None:
    env = service_env("BACKUPKIT_TEST_SFTP_URL", "BACKUPKIT_TEST_SSH_KEY", "BACKUPKIT_TEST_SFTP_DIR")
    url = env["BACKUPKIT_TEST_SFTP_URL"]
    host = url.removeprefix("sftp://").split("/", 1)[0]
    remote = Path(env["BACKUPKIT_TEST_SFTP_DIR"]) / f"py-pull-{os.getpid()}"
    try:
        make_device(remote, 1)
        subprocess.run(["chmod", "-R", "a+rX", str(remote)], check=True)
        devices = f"        - {{id: id1, url: 'ssh://{host}{remote / 'dev1'}'}}\n"
        extra = (
            f"      identity_file: {env['BACKUPKIT_TEST_SSH_KEY']}\n"
            f"      known_hosts: {env.get('BACKUPKIT_TEST_SSH_KNOWN_HOSTS', '')}\n"
            "      options: {ssh_config: /dev/null}\n"
        )
        config = write_config(tmp_path, devices, extra)
        results = backupkit.pull("fleet", config=config)
        assert [(r.destination, r.result) for r in results] == [
            ("id1.results", "ok"),
            ("id1.videos", "ok"),
        ], [r.error for r in results]
        got = tmp_path / "local/results/id1/ETHOSCOPE_001/2026-12-01_10-00-00/run.db"
        want = remote / "dev1/results/id1/ETHOSCOPE_001/2026-12-01_10-00-00/run.db"
        assert got.read_bytes() == want.read_bytes()
    finally:
        shutil.rmtree(remote, ignore_errors=True)


def test_service_status_reads_a_running_serve(tmp_path: Path) -> None:
    import sys

    make_device(tmp_path, 1)
    devices = f"        - {{id: id1, name: ETHOSCOPE_001, url: {tmp_path / 'dev1'}}}\n"
    config = write_config(tmp_path, devices, "    every: 1h\n")
    serve = subprocess.Popen(
        [sys.executable, "-m", "backupkit", "--config", str(config), "serve"]
        + ["--listen", "127.0.0.1:0", "--history", str(tmp_path / "h.json")],
        stdin=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert serve.stderr is not None
        url = ""
        for line in serve.stderr:
            found = re.search(r"status on (http://[0-9.:]+)/", line)
            if found:
                url = found.group(1)
                break
        assert url.startswith("http://127.0.0.1:"), url
        import time

        status: dict[str, Any] = {}
        for _ in range(100):
            status = backupkit.service_status(url)
            if status["devices"] and status["devices"][0]["last_result"]:
                break
            time.sleep(0.1)
        fleet = next(j for j in status["jobs"] if j["name"] == "fleet")
        assert fleet["kind"] == "pull" and fleet["schedule"] == "every 1h"
        one = backupkit.service_status(url, device="ETHOSCOPE_001")
        assert one["id"] == "id1" and one["state"] == "idle" and one["files"] == 2
        with pytest.raises(backupkit.BackupError, match="no device 'nope'"):
            backupkit.service_status(url, device="nope")
    finally:
        serve.terminate()
        assert serve.wait(timeout=20) == 0
    with pytest.raises(backupkit.BackupError, match="is backupkit serve running"):
        backupkit.service_status(url, timeout=2)
