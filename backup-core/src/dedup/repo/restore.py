#!/usr/bin/env python3
"""Restores a snapshot of a deduplicated backupkit repository without
backupkit: writes the snapshot's tar stream to standard output.

    python3 restore.py SNAPSHOT [REPOSITORY] | tar -x
    python3 restore.py --manifest SNAPSHOT [REPOSITORY] | jq .

SNAPSHOT is a snapshot id or a unique prefix of one; REPOSITORY is the
repository's directory (by default, the one this script is in). Needs
Python 3.8 or later and the `zstandard` package (pip install zstandard).
The chunk list is checked against the SHA-256 in snapshot.json before
anything is written, then every chunk (its record header, which names it,
and its zstd frame checksum and length) and the stream's length. On damage
the script names what is damaged and exits 1; what it wrote before then
must not be trusted. A database snapshot's stream is the dump itself
(`python3 restore.py SNAPSHOT > results.db`). With --manifest, the script
writes the snapshot's manifest instead (JSON lines: a header, then every
entry with its whole path, size, mode, times and BLAKE3), checked the same
way.
FORMAT.md describes every file.
"""
import hashlib
import json
import os
import struct
import sys

try:
    import zstandard
except ImportError:
    sys.exit("restore.py: needs the zstandard package (pip install zstandard)")

RECORD = struct.Struct("<4sBBH32sII")  # magic, version, kind, reserved, id, raw, stored
ENTRY = struct.Struct("<32sIII")  # chunk id, record offset, payload length, raw length


def fail(message):
    sys.stderr.write("restore.py: %s\n" % message)
    sys.exit(1)


def find_snapshot(repo, wanted):
    ids = sorted(os.listdir(os.path.join(repo, "snapshots")))
    hits = [i for i in ids if i.startswith(wanted)
            and os.path.exists(os.path.join(repo, "snapshots", i, "snapshot.json"))]
    if len(hits) != 1:
        fail("%d snapshots match %r (list them with: ls %s/snapshots)"
             % (len(hits), wanted, repo))
    return hits[0]


def read_chunk_list(path, checksum):
    with open(path, "rb") as f:
        text = f.read()
    if "sha256:" + hashlib.sha256(text).hexdigest() != checksum:
        fail("%s does not match the SHA-256 in snapshot.json" % path)
    lines = text.decode("ascii").split("\n")
    if lines[0] != "backupkit-chunks 1" or lines[-1] != "":
        fail("%s is not a chunk list" % path)
    chunks = []
    for number, line in enumerate(lines[1:-1], start=2):
        parts = line.split()
        if len(parts) != 2 or len(parts[0]) != 64:
            fail("line %d of %s is damaged" % (number, path))
        chunks.append((bytes.fromhex(parts[0]), int(parts[1])))
    return chunks


def load_locations(repo, wanted):
    """Where each wanted chunk is: id -> (pack name, offset, stored, raw)."""
    found = {}
    index_dir = os.path.join(repo, "index")
    for name in sorted(os.listdir(index_dir)):
        with open(os.path.join(index_dir, name), "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != name:
            fail("index/%s is damaged (its SHA-256 is not its name)" % name)
        if data[:5] != b"bkIX\x01":
            fail("index/%s is not an index fragment" % name)
        at = 8
        while at < len(data):
            pack = data[at:at + 32].hex()
            (count,) = struct.unpack_from("<I", data, at + 32)
            at += 36
            for _ in range(count):
                chunk, offset, stored, raw = ENTRY.unpack_from(data, at)
                at += ENTRY.size
                if chunk in wanted and chunk not in found:
                    found[chunk] = (pack, offset, stored, raw)
    return found


def write_chunks(repo, chunks, out):
    """Writes the chunks' plaintext to out, each checked; returns the bytes."""
    where = load_locations(repo, set(c for c, _ in chunks))
    written = 0
    decompressor = zstandard.ZstdDecompressor()
    for chunk, length in chunks:
        if chunk not in where:
            fail("chunk %s is in no index fragment" % chunk.hex())
        pack, offset, stored, raw = where[chunk]
        pack_path = os.path.join(repo, "packs", pack[:2], pack)
        with open(pack_path, "rb") as f:
            f.seek(offset)
            record = f.read(RECORD.size + stored)
        what = "chunk %s in packs/%s/%s" % (chunk.hex(), pack[:2], pack)
        if len(record) != RECORD.size + stored:
            fail("%s is cut short" % what)
        magic, version, kind, reserved, rid, rraw, rstored = RECORD.unpack_from(record)
        if (magic, version, kind, reserved, rid, rraw, rstored) != \
                (b"bkCK", 1, 1, 0, chunk, raw, stored) or raw != length:
            fail("%s: its record header is damaged" % what)
        try:
            data = decompressor.decompress(record[RECORD.size:], max_output_size=raw)
        except zstandard.ZstdError as e:
            fail("%s does not decompress: %s" % (what, e))
        if len(data) != raw:
            fail("%s holds %d bytes, not %d" % (what, len(data), raw))
        written += len(data)
        out.write(data)
    return written


class WholePaths:
    """Writes manifest lines with every entry's whole path: a line of format
    2 may give only the `name` of an entry in the same directory as the
    entry of the line before."""

    def __init__(self, out):
        self.out, self.rest, self.dir = out, b"", None

    def write(self, data):
        lines = (self.rest + data).split(b"\n")
        self.rest = lines.pop()
        for line in lines:
            self.out.write(self.line(line) + b"\n")

    def line(self, line):
        entry = json.loads(line)
        if "snapshot" in entry:
            return line
        if "name" in entry:
            name = entry.pop("name")
            if self.dir is None or "path" in entry or not name or "/" in name:
                fail("the manifest has a damaged line: %r" % line[:200])
            path = self.dir + "/" + name if self.dir else name
            entry = dict([("path", path)] + list(entry.items()))
        elif "path" not in entry:
            fail("the manifest has a line without a path: %r" % line[:200])
        self.dir = entry["path"].rpartition("/")[0]
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()

    def close(self):
        if self.rest:
            fail("the manifest ends in the middle of a line")


def write_manifest(repo, snap_dir, meta, out):
    """Writes the manifest: from its chunks, or an older snapshot's file."""
    out = WholePaths(out)
    records = dict((o["name"], o["sha256"]) for o in meta["objects"])
    if "manifest.chunks" in records:
        # The header line is not stored (snapshot.json names the snapshot
        # and its format: lines of format 2 from snapshot format 4 on).
        lines = 2 if meta["format"] >= 4 else 1
        header = {"backupkit_manifest": lines, "snapshot": meta["id"]}
        out.write((json.dumps(header, separators=(",", ":")) + "\n").encode())
        chunks = read_chunk_list(os.path.join(snap_dir, "manifest.chunks"),
                                 "sha256:" + records["manifest.chunks"])
        write_chunks(repo, chunks, out)
        out.close()
        return
    name = "manifest.jsonl.zst" if "manifest.jsonl.zst" in records else "manifest.jsonl"
    with open(os.path.join(snap_dir, name), "rb") as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != records.get(name):
        fail("%s does not match the SHA-256 in snapshot.json" % name)
    if name.endswith(".zst"):
        data = zstandard.ZstdDecompressor().stream_reader(data).read()
    out.write(data)
    out.close()


def main():
    args = sys.argv[1:]
    manifest = args[:1] == ["--manifest"]
    if manifest:
        args = args[1:]
    if len(args) not in (1, 2):
        sys.exit(__doc__)
    repo = args[1] if len(args) == 2 else os.path.dirname(os.path.abspath(__file__))
    with open(os.path.join(repo, "backupkit.json")) as f:
        config = json.load(f).get("dedup")
    if not config or config.get("format") != 1:
        fail("%s is not a deduplicated repository of format 1" % repo)
    snap = find_snapshot(repo, args[0])
    snap_dir = os.path.join(repo, "snapshots", snap)
    with open(os.path.join(snap_dir, "snapshot.json")) as f:
        meta = json.load(f)
    out = sys.stdout.buffer
    if manifest:
        write_manifest(repo, snap_dir, meta, out)
        out.flush()
        return
    chunks = read_chunk_list(os.path.join(snap_dir, "chunks"), meta["checksum"])
    written = write_chunks(repo, chunks, out)
    out.flush()
    if written != meta["dedup"]["stream_bytes"]:
        fail("the restored stream has %d bytes, snapshot.json records %d: do not trust it"
             % (written, meta["dedup"]["stream_bytes"]))


if __name__ == "__main__":
    main()
