//! Dump throughput and memory of the SQLite source.
//!
//! ```text
//! cargo run --release -p backup-db --features sqlite --example sqlite_dump_bench -- gen big.db 200
//! /usr/bin/time -f "%e s %M KB" target/release/examples/sqlite_dump_bench dump big.db
//! target/release/examples/sqlite_dump_bench restore big.dump restored.db
//! ```
//!
//! `gen` writes a database of about the given size in MB (two tables with
//! indexes); `dump` dumps it into a byte-counting sink (and OUT, if given);
//! `restore` loads a dump file over TARGET and verifies it.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use backup_core::Cancel;
use backup_core::database::{DatabaseSource, DatabaseTarget};
use backup_db::{SqliteSource, SqliteTarget};
use rusqlite::Connection;

/// Counts bytes, writing them to a file if one is given.
struct Counter(u64, Option<std::fs::File>);

impl Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(f) = &mut self.1 {
            f.write_all(buf)?;
        }
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn generate(path: &Path, megabytes: u64) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE IF NOT EXISTS samples (id INTEGER PRIMARY KEY, run TEXT NOT NULL,
             ts INTEGER NOT NULL, value REAL, payload BLOB);
         CREATE INDEX IF NOT EXISTS samples_run ON samples(run, ts);
         CREATE INDEX IF NOT EXISTS samples_value ON samples(value);
         CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, sample INTEGER, note TEXT);
         CREATE INDEX IF NOT EXISTS events_sample ON events(sample);",
    )?;
    let target = megabytes * 1024 * 1024;
    let mut batch = 0i64;
    loop {
        let size: i64 = conn.query_row(
            "SELECT page_count * page_size FROM pragma_page_count, pragma_page_size",
            [],
            |r| r.get(0),
        )?;
        if size as u64 >= target {
            break;
        }
        conn.execute_batch(&format!(
            "BEGIN;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
             INSERT INTO samples (run, ts, value, payload)
                 SELECT 'run-' || ({batch} * 7 + i % 97), {batch} * 10000 + i, random() / 1e12,
                        randomblob(abs(random()) % 600) FROM n;
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
             INSERT INTO events (sample, note)
                 SELECT {batch} * 10000 + i * 5, 'note ' || hex(randomblob(16)) FROM n;
             COMMIT;"
        ))?;
        batch += 1;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["gen", path, mb] => {
            let start = Instant::now();
            let mb = mb.parse().unwrap_or(200);
            generate(Path::new(path), mb)
                .map(|()| {
                    let len = std::fs::metadata(path).map_or(0, |m| m.len());
                    println!(
                        "generated {path}: {:.1} MB in {:.1} s",
                        len as f64 / 1e6,
                        start.elapsed().as_secs_f64()
                    );
                })
                .map_err(|e| e.to_string())
        }
        ["dump", path, ref out @ ..] if out.len() <= 1 => {
            let start = Instant::now();
            let mut sink = Counter(
                0,
                out.first()
                    .map(|o| std::fs::File::create(o).expect("create OUT")),
            );
            SqliteSource::open(path)
                .and_then(|s| s.dump(&mut sink, &Cancel::new()))
                .map(|counts| {
                    let secs = start.elapsed().as_secs_f64();
                    println!(
                        "dumped {:.1} MB in {secs:.2} s ({:.0} MB/s), rows: {counts:?}",
                        sink.0 as f64 / 1e6,
                        sink.0 as f64 / 1e6 / secs
                    );
                })
                .map_err(|e| e.to_string())
        }
        ["restore", dump, target] => {
            let start = Instant::now();
            let target = match SqliteTarget::new(target) {
                Ok(t) => t,
                Err(e) => return fail(&e.to_string()),
            };
            std::fs::File::open(dump)
                .map_err(|e| e.to_string())
                .and_then(|mut f| {
                    target
                        .load(&mut f, true, &Cancel::new())
                        .map_err(|e| e.to_string())
                })
                .map(|()| {
                    let loaded = start.elapsed().as_secs_f64();
                    let counts = target.verify();
                    println!(
                        "restored in {loaded:.2} s, verified in {:.2} s: {counts:?}",
                        start.elapsed().as_secs_f64() - loaded
                    );
                })
        }
        _ => Err(
            "usage: sqlite_dump_bench gen PATH MB | dump PATH [OUT] | restore DUMP TARGET".into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::FAILURE
}
