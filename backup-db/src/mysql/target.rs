//! Restoring a MariaDB/MySQL dump with the `mariadb` client.

use std::io::Read;
use std::path::PathBuf;

use crate::tool::feed_stdin;
use backup_core::database::{DatabaseTarget, RowCounts};
use backup_core::{Cancel, Error, Result};

use super::{CLIENTS, MyUrl, backend, collect_stderr, programs, quote_ident, quote_str};

/// Suffix of the database a restore builds aside.
const RESTORE_SUFFIX: &str = "__backupkit_restore";
/// Suffix of the database the replaced tables move to while the new ones
/// take their place.
const OLD_SUFFIX: &str = "__backupkit_old";
/// Statement delimiter while a routine, trigger or event body is created.
const OBJECT_DELIMITER: &str = "$$backupkit$$";
/// Longest database name MariaDB and MySQL accept, in characters.
const MAX_IDENT: usize = 64;

/// Tables a database holds (views aside: they cannot move between
/// databases).
const TABLE_TYPES: &str = "('BASE TABLE', 'SYSTEM VERSIONED', 'SEQUENCE')";

/// Where a MariaDB/MySQL dump is restored: a database (the URL's), which
/// may exist.
///
/// [`load`](DatabaseTarget::load) creates `<name>__backupkit_restore`, feeds
/// the SQL to the `mariadb` client there, and only when that succeeds moves
/// its tables into `<name>` (MariaDB cannot rename a database): with
/// `replace`, one atomic `RENAME TABLE` moves the old tables to
/// `<name>__backupkit_old` and the new ones into `<name>`, then the old ones
/// are dropped. A failed load drops the temporary database and leaves the
/// old one as it was.
///
/// Views, triggers, stored routines and events cannot move between
/// databases: they are read back with `SHOW CREATE` and created again in
/// `<name>` once the tables are there (triggers leave the tables for the
/// move). Replacing drops those of the old database.
#[derive(Debug)]
pub struct MysqlTarget {
    url: MyUrl,
    client: Option<PathBuf>,
}

impl MysqlTarget {
    /// A target for `mysql://user[:password]@host[:port]/dbname` (or
    /// `mariadb://`); the database need not exist. Connects to nothing yet.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for a URL that is not one.
    pub fn new(url: &str) -> Result<Self> {
        Ok(Self {
            url: MyUrl::parse(url)?,
            client: None,
        })
    }

    /// The SQL client to run (default: `mariadb`, else `mysql`, from
    /// `PATH`).
    #[must_use]
    pub fn with_client(mut self, program: impl Into<PathBuf>) -> Self {
        self.client = Some(program.into());
        self
    }

    /// The database name.
    pub fn dbname(&self) -> &str {
        &self.url.dbname
    }

    fn clients(&self) -> Vec<PathBuf> {
        programs(self.client.as_deref(), CLIENTS)
    }

    fn query(&self, db: Option<&str>, sql: &str) -> Result<Vec<Vec<String>>> {
        self.url.query(&self.clients(), db, sql)
    }

    /// `name` with `suffix`, within the identifier length.
    fn aside(&self, suffix: &str) -> String {
        let keep = MAX_IDENT.saturating_sub(suffix.chars().count());
        let base: String = self.url.dbname.chars().take(keep).collect();
        format!("{base}{suffix}")
    }

    fn db_exists(&self, name: &str) -> Result<bool> {
        let rows = self.query(
            None,
            &format!(
                "SELECT SCHEMA_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = {};\n",
                quote_str(name)
            ),
        )?;
        Ok(!rows.is_empty())
    }

    fn drop_db(&self, name: &str) -> Result<()> {
        self.query(
            None,
            &format!("DROP DATABASE IF EXISTS {};\n", quote_ident(name)),
        )
        .map(drop)
    }

    /// The tables of `db` that move with `RENAME TABLE`.
    fn tables(&self, db: &str) -> Result<Vec<String>> {
        let rows = self.query(
            None,
            &format!(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
                 AND TABLE_TYPE IN {TABLE_TYPES} ORDER BY TABLE_NAME;\n",
                quote_str(db)
            ),
        )?;
        Ok(rows
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect())
    }

    /// The views, triggers, routines and events of `db`, with what it takes
    /// to create them again elsewhere.
    fn objects(&self, db: &str) -> Result<Vec<Object>> {
        let quoted = quote_str(db);
        let sql = format!(
            "SELECT 'VIEW', TABLE_NAME FROM information_schema.VIEWS WHERE TABLE_SCHEMA = {quoted};\n\
             SELECT ROUTINE_TYPE, ROUTINE_NAME FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {quoted} ORDER BY 1, 2;\n\
             SELECT 'TRIGGER', TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = {quoted} \
             ORDER BY EVENT_OBJECT_TABLE, ACTION_TIMING, EVENT_MANIPULATION, ACTION_ORDER;\n\
             SELECT 'EVENT', EVENT_NAME FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {quoted} ORDER BY 2;\n"
        );
        let listed = self.query(None, &sql)?;
        let mut kinds = Vec::new();
        for row in listed {
            let [kind, name] = <[String; 2]>::try_from(row)
                .map_err(|r| backend(format!("unexpected object row {r:?}")))?;
            let kind = match kind.as_str() {
                "VIEW" => ObjectKind::View,
                "PROCEDURE" => ObjectKind::Procedure,
                "FUNCTION" => ObjectKind::Function,
                "TRIGGER" => ObjectKind::Trigger,
                "EVENT" => ObjectKind::Event,
                other => {
                    return Err(Error::Unsupported(format!(
                        "{} holds a {} ({name}), which backupkit cannot move between databases",
                        self.url.describe_db(db),
                        other.to_lowercase()
                    )));
                }
            };
            kinds.push((kind, name));
        }
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let shows: Vec<String> = kinds
            .iter()
            .map(|(kind, name)| format!("SHOW CREATE {} {};", kind.keyword(), quote_ident(name)))
            .collect();
        let rows = self.query(Some(db), &(shows.join("\n") + "\n"))?;
        if rows.len() != kinds.len() {
            return Err(backend(format!(
                "reading the definitions in {} gave {} answers for {} objects",
                self.url.describe_db(db),
                rows.len(),
                kinds.len()
            )));
        }
        kinds
            .into_iter()
            .zip(rows)
            .map(|((kind, name), row)| Object::from_row(kind, name, &row))
            .collect()
    }

    /// Creates `object` in `db`.
    fn create_object(&self, db: &str, object: &Object) -> Result<()> {
        self.query(Some(db), &object.script()).map(drop)
    }

    /// Drops `object` from `db`.
    fn drop_object(&self, db: &str, object: &Object) -> Result<()> {
        self.query(
            Some(db),
            &format!(
                "DROP {} IF EXISTS {};\n",
                object.kind.keyword(),
                quote_ident(&object.name)
            ),
        )
        .map(drop)
    }

    /// Creates the dump's objects in `db`: routines, then views (in an
    /// order that lets each find the views it reads), triggers, events.
    fn create_objects(&self, db: &str, objects: &[Object]) -> Result<()> {
        for object in objects.iter().filter(|o| o.kind.is_routine()) {
            self.create_object(db, object)?;
        }
        let mut views: Vec<&Object> = objects
            .iter()
            .filter(|o| o.kind == ObjectKind::View)
            .collect();
        while !views.is_empty() {
            let mut failed = Vec::new();
            let mut last = None;
            for view in &views {
                if let Err(e) = self.create_object(db, view) {
                    failed.push(*view);
                    last = Some(e);
                }
            }
            if failed.len() == views.len() {
                return Err(last.expect("a view failed"));
            }
            views = failed;
        }
        for kind in [ObjectKind::Trigger, ObjectKind::Event] {
            for object in objects.iter().filter(|o| o.kind == kind) {
                self.create_object(db, object)?;
            }
        }
        Ok(())
    }

    /// Feeds the dump into the client connected to `dbname`.
    fn run_client(&self, dbname: &str, dump: &mut dyn Read, cancel: &Cancel) -> Result<()> {
        let args = vec![format!("--database={dbname}")];
        let (mut child, program, _defaults) =
            self.url.spawn(&self.clients(), &args, true, false)?;
        let tool = program.display().to_string();
        let stderr = collect_stderr(&mut child);
        feed_stdin(&mut child, dump, cancel, &self.describe())?;
        let status = child
            .wait()
            .map_err(|e| Error::io("wait for", tool.clone(), e))?;
        let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
        if !status.success() {
            return Err(self.url.tool_error(
                &format!(
                    "{tool} could not load the dump into {}",
                    self.url.describe_db(dbname)
                ),
                status,
                &stderr,
            ));
        }
        Ok(())
    }

    /// Moves the tables of the loaded `tmp` database into the target, and
    /// creates its views, triggers, routines and events there.
    fn install(&self, tmp: &str, replace: bool) -> Result<()> {
        let name = self.url.dbname.as_str();
        let new_tables = self.tables(tmp)?;
        let new_objects = self.objects(tmp)?;
        let moves = |from: &str, to: &str, tables: &[String]| -> Vec<String> {
            tables
                .iter()
                .map(|t| {
                    format!(
                        "{}.{} TO {}.{}",
                        quote_ident(from),
                        quote_ident(t),
                        quote_ident(to),
                        quote_ident(t)
                    )
                })
                .collect()
        };
        let existed = self.db_exists(name)?;
        let old = self.aside(OLD_SUFFIX);
        let (old_tables, old_objects) = if existed {
            if !replace {
                return Err(Error::AlreadyExists {
                    path: self.describe(),
                });
            }
            let found = (self.tables(name)?, self.objects(name)?);
            self.query(
                None,
                &format!(
                    "DROP DATABASE IF EXISTS {0};\nCREATE DATABASE {0};\n",
                    quote_ident(&old)
                ),
            )?;
            found
        } else {
            self.query(None, &format!("CREATE DATABASE {};\n", quote_ident(name)))?;
            (Vec::new(), Vec::new())
        };
        let undo = |old_triggers: &[&Object]| {
            for trigger in old_triggers {
                let _ = self.create_object(name, trigger);
            }
            if existed {
                let _ = self.drop_db(&old);
            } else {
                let _ = self.drop_db(name);
            }
        };
        // Tables with triggers cannot move between databases: the triggers
        // leave first (the dump's are created again below, the old ones put
        // back if the move fails).
        for trigger in new_objects.iter().filter(|o| o.kind == ObjectKind::Trigger) {
            if let Err(e) = self.drop_object(tmp, trigger) {
                undo(&[]);
                return Err(e);
            }
        }
        let mut dropped: Vec<&Object> = Vec::new();
        for trigger in old_objects.iter().filter(|o| o.kind == ObjectKind::Trigger) {
            if let Err(e) = self.drop_object(name, trigger) {
                undo(&dropped);
                return Err(e);
            }
            dropped.push(trigger);
        }
        // One statement: the old tables leave and the new ones arrive
        // together, or nothing moves.
        let mut renames = moves(name, &old, &old_tables);
        renames.extend(moves(tmp, name, &new_tables));
        if !renames.is_empty()
            && let Err(e) = self.query(None, &format!("RENAME TABLE {};\n", renames.join(", ")))
        {
            undo(&dropped);
            return Err(e);
        }
        // The new tables are in place: the old database's other objects go,
        // the dump's arrive.
        for object in old_objects.iter().filter(|o| o.kind != ObjectKind::Trigger) {
            self.drop_object(name, object)?;
        }
        self.create_objects(name, &new_objects)
            .map_err(|e| backend(format!(
                "the tables of {} are restored, but its views, triggers, routines or events are not: {e}",
                self.describe()
            )))?;
        if existed {
            // A failure here only leaves the old tables behind under the
            // aside name.
            self.drop_db(&old)?;
        }
        Ok(())
    }
}

/// What kind of object a database holds besides tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ObjectKind {
    View,
    Procedure,
    Function,
    Trigger,
    Event,
}

impl ObjectKind {
    fn keyword(self) -> &'static str {
        match self {
            Self::View => "VIEW",
            Self::Procedure => "PROCEDURE",
            Self::Function => "FUNCTION",
            Self::Trigger => "TRIGGER",
            Self::Event => "EVENT",
        }
    }

    fn is_routine(self) -> bool {
        matches!(self, Self::Procedure | Self::Function)
    }
}

/// A view, trigger, routine or event as `SHOW CREATE` gives it, with the
/// session settings it was created under.
#[derive(Debug)]
struct Object {
    kind: ObjectKind,
    name: String,
    sql_mode: Option<String>,
    time_zone: Option<String>,
    create: String,
    charset: String,
    collation: String,
}

impl Object {
    fn from_row(kind: ObjectKind, name: String, row: &[String]) -> Result<Self> {
        // Columns of SHOW CREATE: VIEW (name, create, charset, collation);
        // PROCEDURE, FUNCTION, TRIGGER (name, sql_mode, create, charset,
        // collation, ...); EVENT (name, sql_mode, time_zone, create, ...).
        let at = |i: usize| {
            row.get(i).cloned().ok_or_else(|| {
                backend(format!(
                    "unexpected SHOW CREATE {} output for {name:?}",
                    kind.keyword()
                ))
            })
        };
        let (sql_mode, time_zone, first) = match kind {
            ObjectKind::View => (None, None, 1),
            ObjectKind::Event => (Some(at(1)?), Some(at(2)?), 3),
            _ => (Some(at(1)?), None, 2),
        };
        Ok(Self {
            kind,
            sql_mode,
            time_zone,
            create: at(first)?,
            charset: at(first + 1)?,
            collation: at(first + 2)?,
            name,
        })
    }

    /// The statements that create it again, for the `mariadb` client.
    fn script(&self) -> String {
        let mut lines = vec![
            format!("SET character_set_client = {};", quote_str(&self.charset)),
            format!("SET collation_connection = {};", quote_str(&self.collation)),
        ];
        if let Some(mode) = &self.sql_mode {
            lines.push(format!("SET SESSION sql_mode = {};", quote_str(mode)));
        }
        if let Some(tz) = &self.time_zone {
            lines.push(format!("SET SESSION time_zone = {};", quote_str(tz)));
        }
        lines.push(format!("DELIMITER {OBJECT_DELIMITER}"));
        lines.push(format!("{}{OBJECT_DELIMITER}", self.create));
        lines.push("DELIMITER ;".to_owned());
        lines.join("\n") + "\n"
    }
}

impl DatabaseTarget for MysqlTarget {
    fn describe(&self) -> String {
        self.url.describe()
    }

    fn exists(&self) -> Result<bool> {
        self.db_exists(&self.url.dbname)
    }

    fn load_verified(
        &self,
        dump: &mut dyn Read,
        replace: bool,
        accept: &dyn Fn(&RowCounts) -> Result<()>,
        cancel: &Cancel,
    ) -> Result<RowCounts> {
        if !replace && self.db_exists(&self.url.dbname)? {
            return Err(Error::AlreadyExists {
                path: self.describe(),
            });
        }
        cancel.check()?;
        let tmp = self.aside(RESTORE_SUFFIX);
        // Left over from an interrupted restore.
        self.query(
            None,
            &format!(
                "DROP DATABASE IF EXISTS {0};\nCREATE DATABASE {0};\n",
                quote_ident(&tmp)
            ),
        )?;
        // The old tables keep their place until the staged ones are checked.
        let loaded = self
            .run_client(&tmp, dump, cancel)
            .and_then(|()| cancel.check())
            .and_then(|()| self.count_rows(&tmp))
            .and_then(|counts| accept(&counts).map(|()| counts))
            .and_then(|counts| {
                self.install(&tmp, replace)?;
                Ok(counts)
            });
        let dropped = self.drop_db(&tmp);
        let counts = loaded?;
        dropped?;
        Ok(counts)
    }

    fn verify(&self) -> Result<RowCounts> {
        self.count_rows(&self.url.dbname)
    }
}

impl MysqlTarget {
    /// A sanity query, then rows per table, of database `name`.
    fn count_rows(&self, name: &str) -> Result<RowCounts> {
        let one = self.query(Some(name), "SELECT 1;\n")?;
        if one != vec![vec!["1".to_owned()]] {
            return Err(Error::Integrity {
                snapshot: self.describe(),
                detail: format!("SELECT 1 returned {one:?}"),
            });
        }
        let tables: Vec<String> = self
            .query(
                None,
                &format!(
                    "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = {} \
                     AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED') ORDER BY TABLE_NAME;\n",
                    quote_str(name)
                ),
            )?
            .into_iter()
            .filter_map(|r| r.into_iter().next())
            .collect();
        if tables.is_empty() {
            return Ok(RowCounts::new());
        }
        let mut sql = vec!["START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY;".to_owned()];
        sql.extend(tables.iter().map(|t| {
            format!(
                "SELECT COUNT(*) FROM {}.{};",
                quote_ident(name),
                quote_ident(t)
            )
        }));
        sql.push("COMMIT;\n".to_owned());
        let sql = sql.join("\n");
        let rows = self.query(None, &sql)?;
        if rows.len() != tables.len() {
            return Err(backend(format!(
                "counting the rows of {} gave {} answers for {} tables",
                self.describe(),
                rows.len(),
                tables.len()
            )));
        }
        let mut counts = RowCounts::new();
        for (table, row) in tables.into_iter().zip(rows) {
            let n = row
                .first()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| backend(format!("unexpected row count {row:?} for {table:?}")))?;
            counts.insert(table, n);
        }
        Ok(counts)
    }
}
