//! A snapshot's chunk list (`snapshots/ID/chunks`): the chunks of its tar
//! stream in order, as text that `restore.py`, `grep` and `awk` read:
//!
//! ```text
//! backupkit-chunks 1
//! <chunk id, 64 hex digits> <plaintext length>
//! ...
//! ```

use std::io::{self, BufRead, Write};

use super::codec::ChunkId;
use super::pack::MAX_CHUNK;

/// The first line.
pub const HEADER: &str = "backupkit-chunks 1";

/// Writes a chunk list.
///
/// # Errors
///
/// The writer's.
pub fn write(out: &mut dyn Write, chunks: &[(ChunkId, u32)]) -> io::Result<()> {
    writeln!(out, "{HEADER}")?;
    for (id, len) in chunks {
        writeln!(out, "{id} {len}")?;
    }
    Ok(())
}

/// Reads a chunk list, refusing anything but what [`write`] writes.
///
/// # Errors
///
/// A message naming the line that is wrong, or the reader's error.
pub fn read(input: &mut dyn BufRead) -> Result<Vec<(ChunkId, u32)>, String> {
    let mut out = Vec::new();
    let mut line = String::new();
    let mut number = 0usize;
    loop {
        line.clear();
        let n = input
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the chunk list: {e}"))?;
        if n == 0 {
            break;
        }
        number += 1;
        let Some(text) = line.strip_suffix('\n') else {
            return Err(format!("line {number} of the chunk list is cut short"));
        };
        if number == 1 {
            if text != HEADER {
                return Err(format!("the chunk list does not start with {HEADER:?}"));
            }
            continue;
        }
        let parsed = text.split_once(' ').and_then(|(id, len)| {
            let id = ChunkId::from_hex(id).ok()?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 10 {
                return None;
            }
            let len: u32 = len.parse().ok()?;
            (len > 0 && len as usize <= MAX_CHUNK).then_some((id, len))
        });
        match parsed {
            Some(entry) => out.push(entry),
            None => {
                return Err(format!(
                    "line {number} of the chunk list is not \"ID LENGTH\""
                ));
            }
        }
    }
    if number == 0 {
        return Err("the chunk list is empty".into());
    }
    Ok(out)
}
