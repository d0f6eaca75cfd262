"""Jobs from a config file from Python: load_config, ConfigError, run."""

import os
import sqlite3
from pathlib import Path

import pytest

import backupkit


def make_tree(root: Path) -> Path:
    data = root / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("x,y\n1,2\n")
    (data / "sub" / "b.json").write_text('{"k": 1}')
    db = sqlite3.connect(root / "lab.db")
    db.execute("CREATE TABLE results (id INTEGER PRIMARY KEY, v TEXT)")
    db.executemany("INSERT INTO results (v) VALUES (?)", [(str(i),) for i in range(50)])
    db.commit()
    db.close()
    return data


CONFIG = """\
jobs:
  lab:
    sources:
      - data
      - database: lab.db
    destinations:
      nas:
        mirror: out/mirror
      repo:
        repository: out/repo
        init: true
        keep_last: 5
      broken:
        repository: {blocked}/repo
        init: true
"""


def test_run_returns_each_destination_and_one_failure_leaves_the_rest(tmp_path: Path) -> None:
    make_tree(tmp_path)
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a directory should be")
    config = tmp_path / "backupkit.yaml"
    config.write_text(CONFIG.format(blocked=blocked))
    loaded = backupkit.load_config(config)
    assert loaded.jobs == ["lab"]
    assert loaded.destinations == [("lab", ["nas", "repo", "broken"])]
    assert loaded.path == config

    events: list[dict[str, object]] = []
    results = backupkit.run(loaded, progress=events.append)
    by_name = {r.destination: r for r in results}
    assert set(by_name) == {"nas", "repo", "broken"}
    assert by_name["nas"].ok and by_name["nas"].kind == "mirror"
    assert by_name["repo"].ok and len(by_name["repo"].snapshots) == 2
    assert by_name["broken"].result == "failed"
    assert "blocked" in (by_name["broken"].error or "")
    assert (tmp_path / "out/mirror/data/a.csv").read_text() == "x,y\n1,2\n"
    assert (tmp_path / "out/mirror/databases/lab.db").is_file()
    assert any("once for all destinations" in str(e["message"]) for e in events)
    assert all({"level", "job", "destination", "message"} <= e.keys() for e in events)

    # The repository holds a files and a database snapshot.
    repo = backupkit.Repository(tmp_path / "out/repo")
    assert sorted(s.kind for s in repo.snapshots()) == ["database", "files"]

    # A path works as well as a Config; `only` and `dry_run`.
    results = backupkit.run(str(config), only=["nas"], dry_run=True)
    assert [r.destination for r in results] == ["nas"]
    assert results[0].ok and any("would mirror" in d for d in results[0].details)


def test_load_config_raises_config_error_with_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "backupkit.yaml"
    config.write_text(
        "jobs:\n"
        "  lab:\n"
        "    sources: [missing]\n"
        "    destinatons:\n"
        "      nas: {mirror: out}\n"
    )
    with pytest.raises(backupkit.ConfigError) as info:
        backupkit.load_config(config)
    assert isinstance(info.value, backupkit.BackupError)
    problems = info.value.problems
    assert [p["line"] for p in problems] == [3, 3, 4], problems
    keys = [p["key"] for p in problems]
    assert "jobs.lab.sources[0]" in keys and "jobs.lab.destinatons" in keys
    assert all(p["file"] == str(config) for p in problems)
    assert any("did you mean `destinations`" in p["message"] for p in problems)
    with pytest.raises(backupkit.ConfigError):
        backupkit.run(config)


def test_config_show_hides_secrets_and_the_environment_finds_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_tree(tmp_path)
    (tmp_path / "pw").write_text("Very-Secret-123\n")
    config = tmp_path / "lab.toml"
    config.write_text(
        '[jobs.lab]\nsources = ["data"]\n'
        '[jobs.lab.destinations.remote]\n'
        'repository = "s3://lab-backups/lab"\n'
        '[jobs.lab.destinations.remote.options]\n'
        'region = "eu-west-1"\n'
        'access_key_id = "AKIDEXAMPLE"\n'
        f'secret_access_key_file = "{tmp_path / "pw"}"\n'
    )
    monkeypatch.setenv("BACKUPKIT_CONFIG", str(config))
    loaded = backupkit.load_config()
    shown = loaded.show()
    remote = shown["jobs"]["lab"]["destinations"]["remote"]
    assert remote["options"]["secret_access_key"].startswith("***")
    assert remote["repository"] == "s3://lab-backups/lab"
    assert "Very-Secret-123" not in repr(shown)


def test_pipeline_integration_backs_up_before_and_after(tmp_path: Path) -> None:
    """Seed 000's `make run`: a backup before and after the analysis."""
    make_tree(tmp_path)
    config = tmp_path / "backupkit.yaml"
    config.write_text(
        "jobs:\n  lab:\n    sources: [data]\n    destinations:\n"
        "      repo: {repository: out/repo, init: true}\n"
    )
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        assert all(r.ok for r in backupkit.run())
        (tmp_path / "data" / "result.csv").write_text("analysis output\n")
        assert all(r.ok for r in backupkit.run())
    finally:
        os.chdir(old)
    snaps = backupkit.Repository(tmp_path / "out/repo").snapshots()
    assert len(snaps) == 2
