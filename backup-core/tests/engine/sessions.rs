//! Safe delete of a session: only verified files go, a file that appears
//! after verification is kept, unsafe verdicts delete nothing, and every
//! deletion leaves an audit record on both sides.

use std::fs;
use std::path::Path;

use backup_core::Cancel;
use backup_core::jobs::doc::Format;
use backup_core::jobs::model;
use backup_core::sessions::{delete, layout, ops};

fn set_up(root: &Path, imported: bool) -> backup_core::jobs::model::Config {
    let data = root.join("data/p001/20250104");
    fs::create_dir_all(data.join("calib")).unwrap();
    for i in 0..5 {
        fs::write(data.join(format!("cam{i}.mp4")), vec![i as u8; 1000 + i]).unwrap();
    }
    fs::write(data.join("calib/params.json"), "{}").unwrap();
    let text = format!(
        "sessions:
  rec:
    source: {root}/data
    layout: \"{{participant_id}}/{{session_date}}\"
    imported:
      command: \"{check}\"
    destinations:
      net:
        mirror: {root}/net
        layout: \"{{session_date}}/{{participant_id}}\"
",
        root = root.display(),
        check = if imported { "true" } else { "exit 1" },
    );
    let path = root.join("backupkit.yaml");
    fs::write(&path, &text).unwrap();
    model::parse(&path, &text, Format::Yaml, false, &super::registry()).unwrap()
}

/// A lab with one session, its config and a registry.
fn lab(
    imported: bool,
) -> (
    tempfile::TempDir,
    backup_core::jobs::model::Config,
    std::sync::Arc<backup_core::Registry>,
) {
    let dir = tempfile::tempdir().unwrap();
    let config = set_up(dir.path(), imported);
    (dir, config, super::registry())
}

fn sync(
    registry: &backup_core::Registry,
    set: &backup_core::sessions::config::SessionSet,
    dest: &backup_core::sessions::config::SessionDestination,
    session: &layout::Session,
) {
    ops::sync(
        registry,
        set,
        dest,
        session,
        false,
        &backup_core::NoProgress,
        &Cancel::new(),
    )
    .unwrap();
}

#[test]
fn only_verified_files_are_deleted_and_audited() {
    let (dir, config, registry) = lab(true);
    let set = &config.sessions[0];
    let dest = &set.destinations[0];
    let cancel = Cancel::new();
    let session = ops::find(set, &["p001".into(), "20250104".into()]).unwrap();
    // Not backed up yet: not safe, and delete refuses.
    let v = delete::verify_for_delete(&registry, set, dest, &session, 3, &cancel);
    assert!(!v.safe);
    assert!(
        v.reasons().contains("backup: nothing at"),
        "{}",
        v.reasons()
    );
    let e = delete::delete(&registry, set, dest, &session, &v, &cancel).unwrap_err();
    assert!(matches!(e, backup_core::Error::Refused { .. }), "{e}");
    sync(&registry, set, dest, &session);
    let v = delete::verify_for_delete(&registry, set, dest, &session, 3, &cancel);
    assert!(v.safe, "{}", v.reasons());
    assert_eq!(v.files.len(), 6);
    assert_eq!(v.files.iter().filter(|f| f.blake3.is_some()).count(), 3);
    // A recording lands after verification: it is kept.
    let src = dir.path().join("data/p001/20250104");
    fs::write(src.join("cam9.mp4"), "late").unwrap();
    let done = delete::delete(&registry, set, dest, &session, &v, &cancel).unwrap();
    assert_eq!(done.files, 6);
    assert_eq!(done.kept, ["cam9.mp4"]);
    assert!(!done.gone && src.join("cam9.mp4").is_file() && !src.join("calib").exists());
    // The backup is whole; the audit record is on both sides.
    assert_eq!(
        fs::read(dir.path().join("net/20250104/p001/cam4.mp4")).unwrap(),
        vec![4u8; 1004]
    );
    let local = fs::read_to_string(delete::audit_log(set)).unwrap();
    let record: serde_json::Value = serde_json::from_str(local.lines().next().unwrap()).unwrap();
    assert_eq!(record["files"], 6);
    assert_eq!(record["session"]["participant_id"], "p001");
    assert_eq!(record["hashes"].as_array().unwrap().len(), 3);
    // At the destination: one write-once JSON Lines record per deletion,
    // the same record as the local log's.
    let remote: Vec<_> = fs::read_dir(dir.path().join("net/.backupkit-deletions"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(remote.len(), 1);
    assert!(
        remote[0]
            .to_string_lossy()
            .ends_with("-p001_20250104.jsonl")
    );
    assert_eq!(fs::read_to_string(&remote[0]).unwrap(), local);
    // The late file alone is no longer backed up as a whole session: the
    // next verdict is not safe until it is synced.
    let v = delete::verify_for_delete(&registry, set, dest, &session, 3, &cancel);
    assert!(!v.safe, "{}", v.reasons());
}

#[test]
fn a_failed_import_check_or_damaged_backup_deletes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = set_up(dir.path(), false);
    let registry = super::registry();
    let set = &config.sessions[0];
    let dest = &set.destinations[0];
    let cancel = Cancel::new();
    let sessions = layout::discover(&set.source, &set.layout, &set.filter).unwrap();
    let session = &sessions[0];
    sync(&registry, set, dest, session);
    let v = delete::verify_for_delete(&registry, set, dest, session, 0, &cancel);
    assert!(
        !v.safe
            && v.reasons()
                .contains("imported: the import check exited with 1"),
        "{}",
        v.reasons()
    );
    assert!(delete::delete(&registry, set, dest, session, &v, &cancel).is_err());
    // Imported, but one byte of the backup flipped (same size): only the
    // content check, which reads the destination back, finds it.
    let config = set_up(dir.path(), true);
    let set = &config.sessions[0];
    let dest = &set.destinations[0];
    let f = dir.path().join("net/20250104/p001/cam2.mp4");
    let mut bytes = fs::read(&f).unwrap();
    bytes[10] ^= 1;
    fs::write(&f, bytes).unwrap();
    let v = delete::verify_for_delete(&registry, set, dest, session, 0, &cancel);
    assert!(
        !v.safe
            && v.reasons()
                .contains("content: differs at the destination: cam2.mp4"),
        "{}",
        v.reasons()
    );
    assert_eq!(
        fs::read_dir(dir.path().join("data/p001/20250104"))
            .unwrap()
            .count(),
        6
    );
}

/// One walk per side counts both: the status shows the source's files,
/// bytes and videos and the destination's files and bytes, a truncated
/// backup file shows in the destination's bytes, and a session deleted
/// locally still shows what is preserved at the destination.
#[test]
fn status_counts_both_sides_in_one_comparison() {
    use backup_core::sessions::status;
    let (dir, config, registry) = lab(true);
    let set = &config.sessions[0];
    let dest = &set.destinations[0];
    let cancel = Cancel::new();
    let session = ops::find(set, &["p001".into(), "20250104".into()]).unwrap();
    let st = status::status(&registry, set, dest, &session, &cancel);
    let source_bytes = 1000 + 1001 + 1002 + 1003 + 1004 + 2;
    assert_eq!((st.files, st.bytes, st.videos), (6, source_bytes, 5));
    assert_eq!((st.backup_files, st.backup_bytes), (0, 0));
    assert!(!st.backup && !st.verified && !st.safe);
    sync(&registry, set, dest, &session);
    let st = status::status(&registry, set, dest, &session, &cancel);
    assert_eq!((st.backup_files, st.backup_bytes), (6, source_bytes));
    assert!(st.backup && st.verified && st.safe, "{:?}", st.checks);
    fs::write(dir.path().join("net/20250104/p001/cam3.mp4"), b"cut").unwrap();
    let st = status::status(&registry, set, dest, &session, &cancel);
    assert_eq!((st.files, st.bytes), (6, source_bytes));
    assert_eq!(
        (st.backup_files, st.backup_bytes),
        (6, source_bytes - 1003 + 3)
    );
    assert!(st.backup && !st.verified && !st.safe);
    let verified = st.checks.iter().find(|c| c.name == "verified").unwrap();
    assert!(verified.reason.contains("cam3.mp4"), "{}", verified.reason);
    fs::remove_dir_all(dir.path().join("data/p001/20250104")).unwrap();
    let st = status::status(&registry, set, dest, &session, &cancel);
    assert_eq!((st.files, st.videos), (0, 0));
    assert_eq!(st.backup_files, 6);
    assert!(st.backup && !st.verified && !st.safe, "{:?}", st.checks);
}
