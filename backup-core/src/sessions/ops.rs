//! Operations on one session: find it by its variables, mirror it to a
//! destination's place for it, verify that place.

use std::sync::Arc;

use crate::jobs::model::OptionValue;
use crate::mirror::{self, MirrorOptions, MirrorSource, MirrorSummary, VerifyMode, VerifyReport};
use crate::sessions::config::{SessionDestination, SessionSet};
use crate::sessions::layout::{Session, Vars};
use crate::source::Excludes;
use crate::tree::Tree;
use crate::{Cancel, Error, Progress, Registry, Result, TargetOptions};

/// The session whose source-template variables are `values`, in the
/// template's order (seed 003's `P D`: participant, then date).
///
/// # Errors
///
/// [`Error::InvalidInput`] for the wrong number of values or one that
/// cannot be a path component; [`Error::NotFound`] when the session is not
/// at the source.
pub fn find(set: &SessionSet, values: &[String]) -> Result<Session> {
    let session = named(set, values)?;
    if !set.source.join(&session.path).is_dir() {
        return Err(Error::NotFound {
            what: "session",
            path: set.source.join(&session.path).display().to_string(),
        });
    }
    Ok(session)
}

/// The session `values` name, whether or not it is (still) at the source:
/// `status` of a session deleted locally shows what is preserved.
///
/// # Errors
///
/// [`Error::InvalidInput`] as [`find`].
pub fn named(set: &SessionSet, values: &[String]) -> Result<Session> {
    let names = set.layout.variables();
    if names.len() != values.len() {
        return Err(Error::InvalidInput(format!(
            "the set {} names a session by {} value(s) ({}); {} given",
            set.name,
            names.len(),
            names.join(", "),
            values.len()
        )));
    }
    let vars: Vars = names
        .iter()
        .map(|n| (*n).to_owned())
        .zip(values.iter().cloned())
        .collect();
    let path = set.layout.render(&vars)?;
    Ok(Session { vars, path })
}

/// The destination's options with secrets resolved.
///
/// # Errors
///
/// A secret that cannot be resolved.
pub fn resolved_options(d: &SessionDestination) -> Result<TargetOptions> {
    d.options
        .iter()
        .map(|(k, v)| {
            let value = match v {
                OptionValue::Plain(s) => s.clone(),
                OptionValue::Secret(s) => s.resolve()?,
            };
            Ok((k.clone(), value))
        })
        .collect()
}

/// The session's place at the destination, as a tree.
///
/// # Errors
///
/// The destination's error opening it.
pub fn place_tree(
    registry: &Registry,
    dest: &SessionDestination,
    session: &Session,
) -> Result<Arc<dyn Tree>> {
    let place = format!(
        "{}/{}",
        dest.location.trim_end_matches('/'),
        dest.layout.dest_path(&session.vars)?
    );
    registry.open_tree(&place, &resolved_options(dest)?)
}

/// The session's source tree and its place at the destination.
fn trees(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
) -> Result<(Vec<MirrorSource>, Arc<dyn Tree>)> {
    let src = set.source.join(&session.path).display().to_string();
    let source = registry.open_tree(&src, &TargetOptions::new())?;
    let tree = place_tree(registry, dest, session)?;
    Ok((vec![MirrorSource::new("", source)], tree))
}

/// Mirrors one session to its place at `dest`, then verifies it by count
/// (as seed 003's `sync`); never deletes at the destination.
///
/// # Errors
///
/// As [`mirror::mirror`].
pub fn sync(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    dry_run: bool,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<MirrorSummary> {
    let (sources, tree) = trees(registry, set, dest, session)?;
    let opts = MirrorOptions {
        excludes: Excludes::new(&set.excludes)?,
        dry_run,
        verify: (!dry_run).then_some(VerifyMode::Count),
        ..MirrorOptions::default()
    };
    let hashers = registry.hashers()?;
    mirror::mirror(
        &sources,
        tree.as_ref(),
        &opts,
        hashers.as_ref(),
        progress,
        cancel,
    )
}

/// Compares the session with its place at `dest`: every file present with
/// its size, and the content of `mode`'s sample (or of all files).
///
/// # Errors
///
/// As [`mirror::verify`].
pub fn verify(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    mode: VerifyMode,
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    verify_observed(
        registry,
        set,
        dest,
        session,
        mode,
        &mut |_| {},
        progress,
        cancel,
    )
}

/// [`verify`], showing `observe` every source file on the way
/// ([`mirror::verify_observed`]).
///
/// # Errors
///
/// As [`mirror::verify`].
#[allow(clippy::too_many_arguments)]
pub fn verify_observed(
    registry: &Registry,
    set: &SessionSet,
    dest: &SessionDestination,
    session: &Session,
    mode: VerifyMode,
    observe: &mut dyn FnMut(&crate::tree::TreeEntry),
    progress: &dyn Progress,
    cancel: &Cancel,
) -> Result<VerifyReport> {
    let (sources, tree) = trees(registry, set, dest, session)?;
    let hashers = registry.hashers()?;
    mirror::verify_observed(
        &sources,
        tree.as_ref(),
        &Excludes::new(&set.excludes)?,
        mode,
        false,
        hashers.as_ref(),
        observe,
        progress,
        cancel,
    )
}

/// The destination of a set by name, or its only one.
///
/// # Errors
///
/// [`Error::InvalidInput`] naming the set's destinations.
pub fn destination<'s>(set: &'s SessionSet, name: Option<&str>) -> Result<&'s SessionDestination> {
    let names: Vec<&str> = set.destinations.iter().map(|d| d.name.as_str()).collect();
    match name {
        Some(n) => set
            .destinations
            .iter()
            .find(|d| d.name == n)
            .ok_or_else(|| {
                Error::InvalidInput(format!(
                    "the set {} has no destination {n:?} (its destinations: {})",
                    set.name,
                    names.join(", ")
                ))
            }),
        None if set.destinations.len() == 1 => Ok(&set.destinations[0]),
        None => Err(Error::InvalidInput(format!(
            "the set {} has several destinations ({}): choose one with --dest",
            set.name,
            names.join(", ")
        ))),
    }
}
