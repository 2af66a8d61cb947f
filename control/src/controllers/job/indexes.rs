//! Completion indexes of Indexed Jobs: each pod carries its index in the
//! `batch.kubernetes.io/job-completion-index` annotation (and label); `status.completedIndexes`
//! lists the succeeded ones as ordered intervals (`1,3-5,7`, a pair written `4,5`). The controller
//! creates the lowest pending indexes first and removes pods with a bad or repeated index.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use crate::controllers::util::pod;

/// The annotation and label holding a pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index of a pod, if it has a valid one.
pub fn completion_index(pod: &Pod) -> Option<i32> {
    let value = pod.metadata.annotations.as_ref()?.get(COMPLETION_INDEX)?;
    value.parse::<i32>().ok().filter(|i| *i >= 0)
}

/// The index of a pod if it is valid for `completions` indexes.
pub fn valid_index(pod: &Pod, completions: i32) -> Option<i32> {
    completion_index(pod).filter(|i| *i < completions)
}

/// A set of indexes kept as disjoint, sorted, non-adjacent intervals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(i32, i32)>);

impl Intervals {
    /// The reference's `parseIndexesFromString`: bad items and indexes at or beyond
    /// `completions` are dropped.
    pub fn parse(text: &str, completions: i32) -> Intervals {
        let mut set = BTreeSet::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (first, last) = match item.split_once('-') {
                Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
                None => (item.parse::<i32>(), item.parse::<i32>()),
            };
            let (Ok(first), Ok(last)) = (first, last) else { continue };
            if first < 0 || first > last {
                continue;
            }
            set.extend(first..=last.min(completions.saturating_sub(1)));
        }
        Intervals::from_sorted(set)
    }

    fn from_sorted(indexes: impl IntoIterator<Item = i32>) -> Intervals {
        let mut intervals: Vec<(i32, i32)> = Vec::new();
        for index in indexes {
            match intervals.last_mut() {
                Some(last) if index <= last.1 + 1 => last.1 = last.1.max(index),
                _ => intervals.push((index, index)),
            }
        }
        Intervals(intervals)
    }

    /// These indexes plus `more`.
    pub fn with(&self, more: impl IntoIterator<Item = i32>) -> Intervals {
        let mut set: BTreeSet<i32> = self.0.iter().flat_map(|(a, b)| *a..=*b).collect();
        set.extend(more);
        Intervals::from_sorted(set)
    }

    pub fn has(&self, index: i32) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&index))
    }

    /// The intervals, first and last index of each, in order.
    pub fn ranges(&self) -> &[(i32, i32)] {
        &self.0
    }

    /// Every index, in order.
    pub fn iter(&self) -> impl Iterator<Item = i32> + '_ {
        self.0.iter().flat_map(|(a, b)| *a..=*b)
    }

    /// How many indexes.
    pub fn total(&self) -> i32 {
        self.0.iter().map(|(a, b)| b - a + 1).sum()
    }

    /// The lowest `count` indexes below `completions` not in this set nor in `busy`.
    pub fn first_pending(&self, busy: &BTreeSet<i32>, count: usize, completions: i32) -> Vec<i32> {
        (0..completions).filter(|i| !self.has(*i) && !busy.contains(i)).take(count).collect()
    }
}

impl std::fmt::Display for Intervals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, (first, last)) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str(",")?;
            }
            write!(f, "{first}")?;
            if last > first {
                let sep = if *last == first + 1 { "," } else { "-" };
                write!(f, "{sep}{last}")?;
            }
        }
        Ok(())
    }
}

/// The active pods to remove because their index is missing, out of range or taken by another
/// active pod (the reference's `appendDuplicatedIndexPodsForRemoval`); the rest, by index.
pub fn bad_or_duplicate(
    active: &[Arc<Pod>],
    completions: i32,
) -> (Vec<Arc<Pod>>, BTreeMap<i32, Arc<Pod>>) {
    let mut remove = Vec::new();
    let mut keep: BTreeMap<i32, Arc<Pod>> = BTreeMap::new();
    for p in active {
        let Some(index) = valid_index(p, completions) else {
            remove.push(p.clone());
            continue;
        };
        match keep.get(&index) {
            // Keep the pod furthest along (running and ready over pending).
            Some(kept) if rank(kept) >= rank(p) => remove.push(p.clone()),
            Some(kept) => {
                remove.push(kept.clone());
                keep.insert(index, p.clone());
            }
            None => {
                keep.insert(index, p.clone());
            }
        }
    }
    (remove, keep)
}

fn rank(p: &Pod) -> (bool, bool, bool) {
    let scheduled =
        p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    (scheduled, pod::phase(p) == "Running", pod::is_ready(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn indexed(index: &str, phase: &str) -> Arc<Pod> {
        let mut p = Pod::default();
        p.metadata.annotations = Some([(COMPLETION_INDEX.to_string(), index.to_string())].into());
        p.status = Some(k8s_openapi::api::core::v1::PodStatus {
            phase: Some(phase.into()),
            ..Default::default()
        });
        Arc::new(p)
    }

    #[test]
    fn intervals_parse_and_print_like_the_reference() {
        let i = Intervals::parse("0,2-4,6,7,x,9-8,12", 10);
        assert_eq!(i.to_string(), "0,2-4,6,7");
        assert_eq!(i.total(), 6);
        assert!(i.has(3) && !i.has(5));
        assert_eq!(i.with([1, 5]).to_string(), "0-7");
        assert_eq!(Intervals::parse("", 3).to_string(), "");
        assert_eq!(Intervals::default().with([4, 5]).to_string(), "4,5");
        // Out of range is clamped away.
        assert_eq!(Intervals::parse("1-20", 4).to_string(), "1-3");
    }

    #[test]
    fn pending_indexes_skip_succeeded_and_busy() {
        let done = Intervals::parse("0,2", 6);
        let busy = BTreeSet::from([1]);
        assert_eq!(done.first_pending(&busy, 2, 6), vec![3, 4]);
        assert_eq!(done.first_pending(&busy, 10, 6), vec![3, 4, 5]);
    }

    #[test]
    fn bad_and_repeated_indexes_are_removed() {
        let pods = vec![
            indexed("0", "Pending"),
            indexed("0", "Running"),
            indexed("7", "Running"),
            indexed("-1", "Running"),
            indexed("1", "Running"),
        ];
        let (remove, keep) = bad_or_duplicate(&pods, 3);
        assert_eq!(remove.len(), 3);
        assert_eq!(keep.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(pod::phase(&keep[&0]), "Running", "the running pod keeps index 0");
        assert_eq!(completion_index(&pods[3]), None);
    }
}
