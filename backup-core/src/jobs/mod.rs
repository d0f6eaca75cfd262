//! Jobs from a config file (in progress): finding the config file
//! ([`find`]) and the document layer that reads YAML and TOML with the
//! position of every value ([`doc`]), on which the config's validation,
//! `config check` and `backupkit run` build.

pub mod doc;
pub mod find;
