//! SMB2/3 shares without a mount: backupkit's own client.
//!
//! The client speaks SMB 2.0.2 to 3.1.1 over TCP, logs on with `NTLMv2`,
//! signs every message (HMAC-SHA256, or AES-CMAC from 3.0 on) and
//! encrypts them with AES-128-GCM when the server offers SMB 3.1.1
//! encryption. Every wait for the server is bounded by the configured
//! timeout, so a share that stops answering fails an operation instead of
//! hanging it. See `conn` for why this is not a third-party crate.

mod conn;
mod crypto;
mod ntlm;
mod ops;
mod target;
mod tree;
mod wire;

pub use conn::{CREATE, OPEN, OPEN_IF, OVERWRITE_IF};
pub use conn::{Config, Encryption, Entry, Handle, Info, Share};
pub use ops::Open;
pub use target::{DEFAULT_TIMEOUT, Location, SmbTarget};
pub use tree::SmbTree;

/// Registers `smb://` repositories and mirror trees, and the check of
/// their options (which neither connects nor reads the password).
pub fn register(registry: &mut backup_core::Registry) {
    registry.register_scheme("smb", |location, options| {
        Ok(std::sync::Arc::new(SmbTarget::open(location, options)?)
            as std::sync::Arc<dyn backup_core::Target>)
    });
    registry.register_tree("smb", |location, options| {
        Ok(std::sync::Arc::new(SmbTree::open(location, options)?)
            as std::sync::Arc<dyn backup_core::tree::Tree>)
    });
    registry.register_option_check("smb", |location, options, _| {
        Location::check(location, options)
    });
}
