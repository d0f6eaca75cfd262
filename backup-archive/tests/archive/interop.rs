//! Interoperability: GNU tar, gzip, zstd and Python read what we write, and
//! we read what GNU tar writes.

use super::*;

#[test]
fn gnu_tar_extracts_our_archives() {
    if !has_tool("tar") {
        eprintln!("skipping: tar not installed");
        return;
    }
    let items = sample_items();
    for format in formats() {
        let flag = match format.compression() {
            Compression::None => "-xf",
            Compression::Gzip => "-xzf",
            Compression::Zstd if has_tool("zstd") => "--zstd",
            Compression::Zstd => continue,
        };
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, pack(&format, &items)).unwrap();
        let dest = dir.path().join("out");
        std::fs::create_dir(&dest).unwrap();
        let mut cmd = Command::new("tar");
        cmd.arg(flag);
        if flag == "--zstd" {
            cmd.arg("-xf");
        }
        let status = cmd.arg(&archive).arg("-C").arg(&dest).status().unwrap();
        assert!(status.success(), "tar {flag} failed");
        check_extracted(&items, &dest);
    }
}

fn check_extracted(items: &[Item], dest: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    for it in items {
        let path = dest.join(&it.entry.path);
        let meta = std::fs::symlink_metadata(&path).unwrap();
        match it.entry.kind {
            EntryKind::File => {
                assert!(meta.is_file());
                assert_eq!(
                    std::fs::read(&path).unwrap(),
                    it.content,
                    "{}",
                    path.display()
                );
                assert_eq!(meta.permissions().mode() & 0o7777, it.entry.mode);
                assert_eq!(meta.mtime(), it.entry.mtime);
            }
            EntryKind::Dir => assert!(meta.is_dir(), "{}", path.display()),
            EntryKind::Symlink => {
                let target = std::fs::read_link(&path).unwrap();
                assert_eq!(target.to_str(), it.entry.link.as_deref());
            }
            EntryKind::Hardlink => {
                let other = dest.join(it.entry.link.as_deref().unwrap());
                assert_eq!(meta.ino(), std::fs::metadata(other).unwrap().ino());
            }
        }
    }
}

#[test]
fn we_read_gnu_tar_archives() {
    if !has_tool("tar") {
        eprintln!("skipping: tar not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let long = src.join("n".repeat(120)).join("m".repeat(120));
    std::fs::create_dir_all(&long).unwrap();
    let mut rng = Rng::new(9);
    let content = csv(&mut rng, 300_000);
    std::fs::write(long.join("f.csv"), &content).unwrap();
    std::fs::write(src.join("ä.txt"), b"x").unwrap();
    std::os::unix::fs::symlink("ä.txt", src.join("s")).unwrap();
    for (compression, flag) in [
        (Compression::None, "-cf"),
        (Compression::Gzip, "-czf"),
        (Compression::Zstd, "--zstd"),
    ] {
        if compression == Compression::Zstd && !has_tool("zstd") {
            continue;
        }
        let archive = dir.path().join("gnu.tar");
        let mut cmd = Command::new("tar");
        cmd.arg("-C").arg(&src).arg(flag);
        if flag == "--zstd" {
            cmd.arg("-cf");
        }
        assert!(cmd.arg(&archive).arg(".").status().unwrap().success());
        let format = TarFormat::new(compression, None).unwrap();
        let seen = unpack(&format, std::fs::read(&archive).unwrap()).unwrap();
        let find = |p: &str| seen.iter().find(|(e, _)| e.path == p);
        let csv_path = format!("./{}/{}/f.csv", "n".repeat(120), "m".repeat(120));
        let (entry, data) = find(&csv_path).expect("long path entry");
        assert_eq!(entry.kind, EntryKind::File);
        assert_eq!(data, &content);
        let (entry, _) = find("./s").expect("symlink");
        assert_eq!(entry.link.as_deref(), Some("ä.txt"));
        let (entry, _) = find(&format!("./{}", "n".repeat(120))).expect("dir");
        assert_eq!(entry.kind, EntryKind::Dir);
    }
}

#[test]
fn standard_tools_decompress_our_streams() {
    let items = sample_items();
    let plain = pack(&TarFormat::new(Compression::None, None).unwrap(), &items);
    if has_tool("gzip") {
        let gz = pack(&TarFormat::new(Compression::Gzip, None).unwrap(), &items);
        assert_eq!(pipe_through(Command::new("gzip").arg("-dc"), &gz), plain);
    }
    if has_tool("zstd") {
        let zst = pack(&TarFormat::new(Compression::Zstd, None).unwrap(), &items);
        assert_eq!(pipe_through(Command::new("zstd").arg("-dc"), &zst), plain);
    }
}

#[test]
fn python_gzip_reads_pargz_output() {
    if !has_tool("python3") {
        eprintln!("skipping: python3 not installed");
        return;
    }
    let mut rng = Rng::new(5);
    let mut data = csv(&mut rng, 700_000);
    data.extend(rng.bytes(300_000));
    for threads in [1, 4] {
        let gz = pargz(&data, 6, threads);
        let script =
            "import gzip,sys; sys.stdout.buffer.write(gzip.decompress(sys.stdin.buffer.read()))";
        let out = pipe_through(Command::new("python3").args(["-c", script]), &gz);
        assert!(out == data, "python3 gzip output differs");
    }
}
