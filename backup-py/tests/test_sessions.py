"""Sessions (seed 003) from Python: status rows, sync, verify, safe delete."""

from pathlib import Path

import pytest

import backupkit


def lab(tmp: Path) -> Path:
    for p, d in [("p001", "20250104"), ("m12", "20250120"), ("TR3", "20250131")]:
        session = tmp / "data" / p / d
        session.mkdir(parents=True)
        for cam in range(3):
            (session / f"cam{cam}.mp4").write_bytes(f"{p}{d}{cam}".encode() * 100)
    imported = tmp / "imported"
    imported.mkdir()
    for s in ["p001_20250104", "m12_20250120"]:
        (imported / s).write_text("")
    config = tmp / "backupkit.yaml"
    config.write_text(
        "sessions:\n"
        "  recordings:\n"
        "    source: data\n"
        '    layout: "{participant_id}/{session_date}"\n'
        "    imported:\n"
        f'      command: "test -e {imported}/{{participant_id}}_{{session_date}}"\n'
        "    destinations:\n"
        "      net:\n"
        "        mirror: net\n"
        '        layout: "{session_date}/{participant_id}"\n'
    )
    return config


def test_status_sync_verify_and_safe_delete(tmp_path: Path) -> None:
    config = lab(tmp_path)
    rows = backupkit.status_range(config)
    assert [r.date for r in rows] == ["20250104", "20250120", "20250131"]
    assert [(r.imported, r.backup, r.safe) for r in rows] == [(True, False, False), (True, False, False), (False, False, False)]
    for values in (["p001", "20250104"], ["m12", "20250120"]):
        result = backupkit.sync_session(values, config)
        assert result.complete and result.copied == 3
    rows = backupkit.status_range(config, start_date="2025-01-01", end_date="20250120")
    assert [r.safe for r in rows] == [True, True]
    assert rows[0].place.endswith("net/20250104/p001")
    assert backupkit.verify_session(["p001", "20250104"], config, full=True).ok
    (tmp_path / "net/20250120/m12/cam1.mp4").write_bytes(b"damaged")
    report = backupkit.verify_session(["m12", "20250120"], config)
    assert not report.ok and [d[0] for d in report.different] == ["cam1.mp4"]

    with pytest.raises(backupkit.InvalidInputError, match="confirm=True"):
        backupkit.delete_session(["p001", "20250104"], config)
    with pytest.raises(backupkit.RefusedError, match="not safe"):
        backupkit.delete_session(["m12", "20250120"], config, confirm=True)
    with pytest.raises(backupkit.RefusedError, match="imported"):
        backupkit.delete_session(["TR3", "20250131"], config, confirm=True)
    checked = backupkit.delete_session(["p001", "20250104"], config, dry_run=True)
    assert checked["safe"] and (tmp_path / "data/p001/20250104/cam0.mp4").exists()
    done = backupkit.delete_session(["p001", "20250104"], config, confirm=True, sample=0)
    assert done["files"] == 3 and done["gone"]
    assert not (tmp_path / "data/p001/20250104").exists()
    assert (tmp_path / "net/20250104/p001/cam2.mp4").is_file()
    assert (tmp_path / "data/.backupkit-deletions.jsonl").read_text().count("\n") == 1
