//! Landlock confinement of the step: read and execute everywhere, write only
//! beneath the step's writable directories (and to the device files in
//! /dev). Best effort by ABI: on kernels without Landlock the namespaces and
//! read-only mounts still hold; where it exists (ABI 6 is the newest set
//! requested) it also stops writes through any writable bind the caller did
//! not list, mounts by nested user namespaces, and signals or abstract-socket
//! connections to processes outside the step.

use std::path::PathBuf;

use ::landlock::{
    path_beneath_rules, Access, AccessFs, CompatLevel, Compatible, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetError, RulesetStatus, Scope, ABI,
};

#[derive(Debug, thiserror::Error)]
#[error("Landlock ruleset: {0}")]
pub(crate) struct LandlockError(#[from] RulesetError);

const TARGET_ABI: ABI = ABI::V6;

pub(crate) fn restrict(writable: &[PathBuf]) -> Result<RulesetStatus, LandlockError> {
    let all = AccessFs::from_all(TARGET_ABI);
    let read = AccessFs::from_read(TARGET_ABI);
    let devices = read | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
    let status = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)?
        .scope(Scope::from_all(TARGET_ABI))?
        .create()?
        .add_rules(path_beneath_rules(["/"], read))?
        .add_rules(path_beneath_rules(["/dev"], devices))?
        .add_rules(path_beneath_rules(writable, all))?
        .restrict_self()?;
    Ok(status.ruleset)
}
