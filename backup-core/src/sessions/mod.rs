//! Sessions (seed 003): recordings laid out by a path template, synced to
//! a destination with a layout of its own, checked and safely deleted.
//!
//! So far: the layout (path templates, the filters, finding the sessions
//! below a source base: [`layout`]), the config's `sessions:` section
//! ([`config`]), syncing and verifying one session ([`ops`]), and its
//! status with the external import check ([`status`]).

pub mod config;
pub mod delete;
pub mod layout;
pub mod ops;
pub mod status;
