//! backupkit's storage targets. This release has local and mounted paths;
//! each remote kind will come behind its own cargo feature.

mod local;

use std::sync::Arc;

use backup_core::Registry;

pub use local::LocalTarget;

/// Registers every target this build has (`file` and plain paths).
pub fn register(registry: &mut Registry) {
    registry.register_scheme(backup_core::registry::LOCAL_SCHEME, |location| {
        let path = location.strip_prefix("file://").unwrap_or(location);
        Ok(Arc::new(LocalTarget::new(path)?) as Arc<dyn backup_core::Target>)
    });
}
