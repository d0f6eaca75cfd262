//! Sessions (seed 003): recordings laid out by a path template, synced to
//! a destination with a layout of its own, checked and safely deleted.
//!
//! This first part is the layout: path templates, the filters, and finding
//! the sessions below a source base ([`layout`]).

pub mod layout;
