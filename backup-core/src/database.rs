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

    /// Whether `sql` returns at least one row (an external record's yes or
    /// no, as seed 003's import lookup). `values` are the query's
    /// parameters in order, for the placeholders [`placeholders`] put in;
    /// they are bound (or, for a client without binding, quoted as
    /// literals), never spliced into the text. Read-only by intent: the
    /// caller's query is run as given.
    fn finds(&self, sql: &str, values: &[String]) -> Result<bool> {
        let _ = (sql, values);
        Err(crate::Error::Unsupported(format!(
            "{} databases cannot answer queries in this build",
            self.engine()
        )))
    }

    /// How this engine writes the `n`th parameter (1-based) of a query
    /// (`?1`, `$1`); `None` for an engine that takes quoted literals.
    fn placeholder(&self, n: usize) -> Option<String> {
        Some(format!("?{n}"))
    }

    /// A value as this engine's string literal (for engines without
    /// parameters).
    fn literal(&self, value: &str) -> String {
        format!("'{}'", value.replace('\'', "''"))
    }
}

/// Whether `sql` finds a row in `db`, with `params` for its `:name`
/// placeholders.
///
/// # Errors
///
/// A placeholder `params` lacks, and the engine's errors.
pub fn finds(
    db: &dyn DatabaseSource,
    sql: &str,
    params: &BTreeMap<String, String>,
) -> Result<bool> {
    let (sql, values) = placeholders(sql, params, &|n| db.placeholder(n), &|v| db.literal(v))?;
    db.finds(&sql, &values)
}

/// Rewrites `:name` placeholders of `sql` (outside quoted strings and
/// identifiers, and not the `::` of a cast) for an engine: with
/// `style(n)`'s placeholder, or with `literal(value)` where the engine
/// binds none; returns the SQL and the values in order.
///
/// # Errors
///
/// [`crate::Error::InvalidInput`] for a `:name` that `params` lacks.
pub fn placeholders(
    sql: &str,
    params: &BTreeMap<String, String>,
    style: &dyn Fn(usize) -> Option<String>,
    literal: &dyn Fn(&str) -> String,
) -> Result<(String, Vec<String>)> {
    let bytes = sql.as_bytes();
    let mut out = String::with_capacity(sql.len());
    let mut values = Vec::new();
    let mut quote: Option<u8> = None;
    let mut pos = 0;
    let mut start = 0;
    while pos < bytes.len() {
        let ch = bytes[pos];
        if let Some(close) = quote {
            if ch == close {
                quote = None;
            }
            pos += 1;
            continue;
        }
        if ch == b'\'' || ch == b'"' || ch == b'`' {
            quote = Some(ch);
            pos += 1;
            continue;
        }
        let is_name = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
        if ch == b':'
            && bytes
                .get(pos + 1)
                .is_some_and(|n| n.is_ascii_alphabetic() || *n == b'_')
            && (pos == 0 || bytes[pos - 1] != b':')
        {
            let mut end = pos + 1;
            while end < bytes.len() && is_name(bytes[end]) {
                end += 1;
            }
            let name = &sql[pos + 1..end];
            let value = params.get(name).ok_or_else(|| {
                crate::Error::InvalidInput(format!(
                    "the query uses :{name}, which is not a session variable (known: {})",
                    params
                        .keys()
                        .map(String::as_str)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })?;
            out.push_str(&sql[start..pos]);
            values.push(value.clone());
            match style(values.len()) {
                Some(p) => out.push_str(&p),
                None => out.push_str(&literal(value)),
            }
            pos = end;
            start = end;
            continue;
        }
        pos += 1;
    }
    out.push_str(&sql[start..]);
    Ok((out, values))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_rewritten_outside_strings_and_casts() {
        let params: BTreeMap<String, String> = [("pid", "p001"), ("d", "20250104")]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dollar = |n: usize| Some(format!("${n}"));
        let (sql, values) = placeholders(
            "SELECT 1 FROM s WHERE id = :pid AND day = :d::date AND note <> ':pid'",
            &params,
            &dollar,
            &|v| v.to_owned(),
        )
        .unwrap();
        assert_eq!(
            sql,
            "SELECT 1 FROM s WHERE id = $1 AND day = $2::date AND note <> ':pid'"
        );
        assert_eq!(values, ["p001", "20250104"]);
        let (sql, _) = placeholders("x = :pid", &params, &|_| None, &|v| format!("'{v}'")).unwrap();
        assert_eq!(sql, "x = 'p001'");
        let e = placeholders("x = :camera", &params, &dollar, &|v| v.to_owned()).unwrap_err();
        assert!(e.to_string().contains(":camera"), "{e}");
    }
}
