//! Jobs from a config file: finding it ([`find`]), reading YAML and TOML
//! with the position of every value ([`doc`]), the validated model
//! ([`model`]) with secrets from secret sources ([`secret`]), the seeds'
//! own config sections ([`seeds`]), and running jobs ([`run`]).

pub mod doc;
pub mod find;
pub mod hooks;
pub mod log;
pub mod model;
pub mod notify;
pub mod run;
pub mod secret;
pub mod seeds;
