//! What to do with a dependent given the state of its owners: the reference's
//! `attemptToDeleteItem` as a pure function.

use super::graph::{FOREGROUND, ORPHAN};

/// What the collector found for one ownerReference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists with the referenced uid (and is not waiting for its dependents).
    Solid,
    /// No object of that name, or one with another uid: the reference is dangling.
    Dangling,
    /// The owner is being deleted in the foreground and waits for its dependents.
    WaitingForDependents,
    /// The owner's kind is not served (yet): no decision can be made about it.
    Unknown,
}

/// The propagation policy of a delete the collector issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// The collector's decision for one dependent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It has a live owner (or no owners): leave it.
    Keep,
    /// Some owner cannot be resolved now: look again later.
    Retry,
    /// It keeps a live owner, but these references (by owner uid) are dead: drop them.
    RemoveOwnerReferences(Vec<String>),
    /// Every owner is gone or deleting its dependents: delete it with this policy.
    Delete(Policy),
}

/// The decision for a dependent whose owners (by uid) are in `owners`, that itself has
/// dependents or not, and carries `finalizers`.
pub fn decide(
    owners: &[(String, OwnerState)],
    has_dependents: bool,
    finalizers: &[String],
) -> Decision {
    if owners.is_empty() {
        return Decision::Keep;
    }
    let with = |state: OwnerState| {
        owners.iter().filter(move |(_, s)| *s == state).map(|(uid, _)| uid.clone())
    };
    if with(OwnerState::Solid).next().is_some() {
        let dead: Vec<String> =
            with(OwnerState::Dangling).chain(with(OwnerState::WaitingForDependents)).collect();
        return if dead.is_empty() {
            Decision::Keep
        } else {
            Decision::RemoveOwnerReferences(dead)
        };
    }
    if with(OwnerState::Unknown).next().is_some() {
        return Decision::Retry;
    }
    if with(OwnerState::WaitingForDependents).next().is_some() && has_dependents {
        // Its owner waits for it, so it must wait for its own dependents in turn.
        return Decision::Delete(Policy::Foreground);
    }
    let has = |f: &str| finalizers.iter().any(|x| x == f);
    if has(ORPHAN) {
        Decision::Delete(Policy::Orphan)
    } else if has(FOREGROUND) {
        Decision::Delete(Policy::Foreground)
    } else {
        Decision::Delete(Policy::Background)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use OwnerState::*;

    fn owners(states: &[OwnerState]) -> Vec<(String, OwnerState)> {
        states.iter().enumerate().map(|(i, s)| (format!("u{i}"), *s)).collect()
    }

    #[test]
    fn an_object_without_owners_is_kept() {
        assert_eq!(decide(&[], false, &[]), Decision::Keep);
    }

    #[test]
    fn a_solid_owner_keeps_the_dependent_and_dead_references_are_dropped() {
        assert_eq!(decide(&owners(&[Solid]), false, &[]), Decision::Keep);
        assert_eq!(
            decide(&owners(&[Solid, Dangling, WaitingForDependents]), false, &[]),
            Decision::RemoveOwnerReferences(vec!["u1".into(), "u2".into()])
        );
    }

    #[test]
    fn all_owners_dangling_deletes_in_the_background() {
        assert_eq!(
            decide(&owners(&[Dangling, Dangling]), true, &[]),
            Decision::Delete(Policy::Background)
        );
    }

    #[test]
    fn an_unresolvable_owner_postpones_the_decision() {
        assert_eq!(decide(&owners(&[Dangling, Unknown]), false, &[]), Decision::Retry);
    }

    #[test]
    fn a_foreground_owner_deletes_dependents_with_dependents_in_the_foreground() {
        assert_eq!(
            decide(&owners(&[WaitingForDependents]), true, &[]),
            Decision::Delete(Policy::Foreground)
        );
        assert_eq!(
            decide(&owners(&[WaitingForDependents]), false, &[]),
            Decision::Delete(Policy::Background)
        );
    }

    #[test]
    fn the_dependents_own_finalizers_choose_its_policy() {
        assert_eq!(
            decide(&owners(&[Dangling]), false, &[ORPHAN.into()]),
            Decision::Delete(Policy::Orphan)
        );
        assert_eq!(
            decide(&owners(&[Dangling]), false, &[FOREGROUND.into()]),
            Decision::Delete(Policy::Foreground)
        );
    }
}
