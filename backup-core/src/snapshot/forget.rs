//! Forgetting snapshots: by id, or by a retention policy applied to each
//! group of snapshots (same host and same paths, as restic groups them).
//!
//! Forgetting removes a snapshot's own objects: `snapshot.json` first, so
//! the snapshot vanishes atomically, then the rest. In an archive
//! repository that is all its data; in a deduplicated one the chunks stay
//! until [`crate::prune`] finds no snapshot uses them.

use std::collections::BTreeMap;
use std::path::PathBuf;

use chrono::Utc;
use serde::{Deserialize, Serialize};

use crate::repository::Repository;
use crate::retention::{Candidate, Decision, KeepPolicy, apply};
use crate::snapshot::SnapshotMeta;
use crate::{Error, Result};

/// Which snapshots a command considers: all of these filters must match
/// (each list matches if empty or if any of its values matches).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotFilter {
    pub hosts: Vec<String>,
    pub tags: Vec<String>,
    /// Source paths (made absolute before comparing).
    pub paths: Vec<PathBuf>,
}

impl SnapshotFilter {
    pub fn matches(&self, s: &SnapshotMeta) -> bool {
        let host = self.hosts.is_empty() || self.hosts.contains(&s.host);
        let tag = self.tags.is_empty() || self.tags.iter().any(|t| s.tags.contains(t));
        let path = self.paths.is_empty()
            || self.paths.iter().any(|p| {
                let abs = std::path::absolute(p).unwrap_or_else(|_| p.clone());
                s.paths.iter().any(|sp| std::path::Path::new(sp) == abs)
            });
        host && tag && path
    }
}

/// A policy-based forget: the policy and the snapshots it applies to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForgetOptions {
    pub policy: KeepPolicy,
    pub filter: SnapshotFilter,
    /// Decide and report, delete nothing.
    pub dry_run: bool,
}

/// The policy's verdict on one group.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetGroup {
    pub host: String,
    pub paths: Vec<String>,
    /// Kept snapshots, newest first, each with the reasons it was kept.
    pub keep: Vec<Decision>,
    /// Snapshots removed (or, in a dry run, to be removed), newest first.
    pub remove: Vec<Decision>,
}

impl Repository {
    /// Deletes the given snapshots (ids or unique prefixes) under an
    /// exclusive lock; returns the deleted ids. With `dry_run`, only resolves.
    pub fn forget(&self, ids: &[String], dry_run: bool) -> Result<Vec<String>> {
        let metas = ids
            .iter()
            .map(|id| self.find_snapshot(id))
            .collect::<Result<Vec<_>>>()?;
        let mut resolved: Vec<String> = metas.into_iter().map(|m| m.id).collect();
        resolved.sort();
        resolved.dedup();
        if dry_run {
            return Ok(resolved);
        }
        let _lock = self.lock_exclusive()?;
        for id in &resolved {
            self.delete_snapshot_objects(id)?;
        }
        Ok(resolved)
    }

    /// Applies a retention policy to each group of matching snapshots and
    /// deletes what it does not keep (unless `dry_run`). Times are bucketed
    /// in the local time zone, as restic does.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] for an empty policy (it would keep
    /// everything, and is almost certainly a mistake in a cron line), and for
    /// a policy that would remove every snapshot of a group (nothing is
    /// deleted then, in any group).
    pub fn forget_by_policy(&self, opts: &ForgetOptions) -> Result<Vec<ForgetGroup>> {
        if opts.policy.is_empty() {
            return Err(Error::InvalidInput(
                "no keep policy given (for example --keep-daily 7); nothing would be removed"
                    .into(),
            ));
        }
        if opts.dry_run {
            return self.plan_forget(opts);
        }
        // Decide under the lock, so that the plan is about the snapshots
        // that are there when deleting.
        let _lock = self.lock_exclusive()?;
        let groups = self.plan_forget(opts)?;
        for g in &groups {
            for d in &g.remove {
                self.delete_snapshot_objects(&d.id)?;
            }
        }
        Ok(groups)
    }

    fn plan_forget(&self, opts: &ForgetOptions) -> Result<Vec<ForgetGroup>> {
        let mut groups: BTreeMap<(String, Vec<String>), Vec<Candidate>> = BTreeMap::new();
        for s in self.snapshots()? {
            if !opts.filter.matches(&s) {
                continue;
            }
            let mut paths = s.paths.clone();
            paths.sort();
            groups
                .entry((s.host.clone(), paths))
                .or_default()
                .push(Candidate {
                    id: s.id,
                    time: s.timestamp,
                    tags: s.tags,
                });
        }
        let now = Utc::now();
        groups
            .into_iter()
            .map(|((host, paths), candidates)| {
                let (keep, remove): (Vec<Decision>, Vec<Decision>) =
                    apply(&candidates, &opts.policy, &chrono::Local, now)
                        .into_iter()
                        .partition(|d| d.keep);
                // As restic: a policy that would empty a group (a --keep-tag
                // no snapshot has) is a mistake; nothing is deleted at all.
                if keep.is_empty() {
                    return Err(Error::InvalidInput(format!(
                        "refusing to delete the last snapshot of the group host {host:?}, paths {paths:?}: \
                         the policy keeps none of its {} snapshot(s)",
                        remove.len()
                    )));
                }
                Ok(ForgetGroup {
                    host,
                    paths,
                    keep,
                    remove,
                })
            })
            .collect()
    }
}
