//! The database contract: a source that yields one consistent dump stream,
//! and a place a dump is loaded back into and verified. Engines (SQLite,
//! PostgreSQL, MariaDB) live in `backup-db`; the snapshot engine only sees
//! these traits.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Read, Write};

use crate::Result;
use crate::progress::Cancel;

/// Rows per table, recorded when a dump is made and compared after a
/// restore.
pub type RowCounts = BTreeMap<String, u64>;

/// A database that can be dumped.
///
/// # Contract
///
/// - `dump` writes one consistent snapshot of the database (a single
///   transaction or an online copy), streaming: memory stays bounded
///   whatever the database size. Other processes may keep writing.
/// - The returned row counts describe exactly what was dumped.
/// - A busy or locked database is retried with backoff before failing.
/// - `describe` and every error are free of credentials.
pub trait DatabaseSource: Debug + Send + Sync {
    /// `sqlite`, `postgres` or `mysql`.
    fn engine(&self) -> &'static str;

    /// Where the database is, fit for messages and metadata.
    fn describe(&self) -> String;

    /// File name of the dump inside a snapshot, before compression
    /// (`results.db`, `app.sql`).
    fn dump_name(&self) -> String;

    /// Streams a consistent dump into `out`; returns its row counts.
    fn dump(&self, out: &mut dyn Write, cancel: &Cancel) -> Result<RowCounts>;
}

/// A database a dump can be restored into.
///
/// # Contract
///
/// - `load_verified` builds the new database aside (a staging file or
///   database), runs the engine's integrity check on it, counts its rows per
///   table and hands the counts to `accept`. Only when `accept` returns `Ok`
///   does the new database take the target's name, replacing the old one
///   (which is kept until then). On any failure, `accept`'s included, the
///   existing database is untouched and no staging copy is left behind.
/// - It fails before touching an existing database unless `replace` is set.
/// - `verify` runs the engine's integrity check on the database in place and
///   counts rows per table.
pub trait DatabaseTarget: Debug + Send + Sync {
    /// Where the database goes, fit for messages (no credentials).
    fn describe(&self) -> String;

    /// Whether a database already exists there.
    fn exists(&self) -> Result<bool>;

    /// Loads a dump made by the matching source, checked before it is put in
    /// place (see the contract); returns the staged database's row counts.
    fn load_verified(
        &self,
        dump: &mut dyn Read,
        replace: bool,
        accept: &dyn Fn(&RowCounts) -> Result<()>,
        cancel: &Cancel,
    ) -> Result<RowCounts>;

    /// Loads a dump that passes the engine's own integrity check, whatever
    /// its row counts.
    fn load(&self, dump: &mut dyn Read, replace: bool, cancel: &Cancel) -> Result<()> {
        self.load_verified(dump, replace, &|_| Ok(()), cancel)
            .map(|_| ())
    }

    /// Integrity check, then rows per table.
    fn verify(&self) -> Result<RowCounts>;
}
