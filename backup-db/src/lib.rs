//! backupkit's database engines: each dumps a live database into one
//! consistent stream and loads such a stream back, verified. Every engine
//! sits behind its own cargo feature (`sqlite`, `postgres`, `mysql`); [`register`]
//! adds the ones this build has to a [`Registry`].

#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;
#[cfg(any(feature = "postgres", feature = "mysql"))]
mod tool;
mod url;

use backup_core::Registry;

#[cfg(feature = "mysql")]
pub use mysql::{MysqlSource, MysqlTarget};
#[cfg(feature = "postgres")]
pub use postgres::{PostgresSource, PostgresTarget};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteSource, SqliteTarget};
pub use url::sqlite_path;

/// Registers every engine this build has (with feature `sqlite`: scheme
/// `sqlite`, URLs parsed by [`sqlite_path`]; with feature `postgres`:
/// schemes `postgres` and `postgresql`; with feature `mysql`: schemes
/// `mysql` and `mariadb`).
pub fn register(registry: &mut Registry) {
    #[cfg(feature = "mysql")]
    {
        use std::sync::Arc;

        use backup_core::database::{DatabaseSource, DatabaseTarget};

        for scheme in ["mysql", "mariadb"] {
            registry.register_database(
                scheme,
                |url| Ok(Arc::new(MysqlSource::new(url)?) as Arc<dyn DatabaseSource>),
                |url| Ok(Arc::new(MysqlTarget::new(url)?) as Arc<dyn DatabaseTarget>),
            );
        }
    }
    #[cfg(feature = "postgres")]
    {
        use std::sync::Arc;

        use backup_core::database::{DatabaseSource, DatabaseTarget};

        for scheme in ["postgres", "postgresql"] {
            registry.register_database(
                scheme,
                |url| Ok(Arc::new(PostgresSource::new(url)?) as Arc<dyn DatabaseSource>),
                |url| Ok(Arc::new(PostgresTarget::new(url)?) as Arc<dyn DatabaseTarget>),
            );
        }
    }
    #[cfg(feature = "sqlite")]
    {
        use std::sync::Arc;

        use backup_core::database::{DatabaseSource, DatabaseTarget};

        registry.register_database(
            "sqlite",
            |url| Ok(Arc::new(SqliteSource::open(sqlite_path(url)?)?) as Arc<dyn DatabaseSource>),
            |url| Ok(Arc::new(SqliteTarget::new(sqlite_path(url)?)?) as Arc<dyn DatabaseTarget>),
        );
    }
    #[cfg(not(any(feature = "sqlite", feature = "postgres", feature = "mysql")))]
    let _ = registry;
}
