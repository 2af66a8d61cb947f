//! Packing endpoints into EndpointSlices of at most `max` endpoints with little churn: an
//! endpoint stays in the slice that already holds it, new endpoints fill slices with room
//! before new slices are made, and slices left empty are deleted. Pure: slices and endpoints
//! are named by keys; the controller turns the plan into API calls.

use std::collections::HashSet;

/// An existing slice: its name and the keys of the endpoints it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Existing {
    pub name: String,
    pub keys: Vec<String>,
}

/// What to do with the slices of one port set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Existing slices to keep, with the keys they should hold now.
    pub keep: Vec<(String, Vec<String>)>,
    /// New slices, with their keys.
    pub create: Vec<Vec<String>>,
    /// Slices no longer needed.
    pub delete: Vec<String>,
}

/// Plans slices holding exactly the `desired` keys, at most `max` per slice.
pub fn pack(existing: &[Existing], desired: &[String], max: usize) -> Plan {
    let max = max.max(1);
    let wanted: HashSet<&str> = desired.iter().map(String::as_str).collect();
    let mut placed: HashSet<String> = HashSet::new();
    let mut slots: Vec<(String, Vec<String>)> = existing
        .iter()
        .map(|slice| {
            let mut keys = Vec::new();
            for key in &slice.keys {
                // A key in two slices (never written by us, but possible) is kept once.
                if keys.len() < max && wanted.contains(key.as_str()) && placed.insert(key.clone()) {
                    keys.push(key.clone());
                }
            }
            (slice.name.clone(), keys)
        })
        .collect();
    let mut fresh = desired.iter().filter(|k| !placed.contains(*k)).cloned().peekable();
    for (_, keys) in slots.iter_mut() {
        while keys.len() < max {
            match fresh.next() {
                Some(key) => keys.push(key),
                None => break,
            }
        }
    }
    let mut plan = Plan::default();
    while fresh.peek().is_some() {
        plan.create.push(fresh.by_ref().take(max).collect());
    }
    for (name, keys) in slots {
        if keys.is_empty() {
            plan.delete.push(name);
        } else {
            plan.keep.push((name, keys));
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(range: std::ops::Range<usize>) -> Vec<String> {
        range.map(|i| format!("10.0.0.{i}")).collect()
    }

    #[test]
    fn splits_into_slices_of_at_most_max() {
        let plan = pack(&[], &keys(0..250), 100);
        let sizes: Vec<usize> = plan.create.iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![100, 100, 50]);
        assert!(plan.keep.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn endpoints_stay_where_they_are_and_new_ones_fill_gaps() {
        let existing = vec![
            Existing { name: "s1".into(), keys: keys(0..3) },
            Existing { name: "s2".into(), keys: keys(3..5) },
        ];
        // 1 left, 5 and 6 arrived.
        let mut desired = keys(0..1);
        desired.extend(keys(2..7));
        let plan = pack(&existing, &desired, 3);
        assert_eq!(
            plan.keep[0],
            ("s1".to_string(), vec!["10.0.0.0".into(), "10.0.0.2".into(), "10.0.0.5".into()])
        );
        assert_eq!(
            plan.keep[1],
            ("s2".to_string(), vec!["10.0.0.3".into(), "10.0.0.4".into(), "10.0.0.6".into()])
        );
        assert!(plan.create.is_empty() && plan.delete.is_empty());
    }

    #[test]
    fn emptied_slices_are_deleted() {
        let existing = vec![
            Existing { name: "s1".into(), keys: keys(0..2) },
            Existing { name: "s2".into(), keys: keys(2..4) },
        ];
        let plan = pack(&existing, &keys(0..2), 100);
        assert_eq!(plan.delete, vec!["s2".to_string()]);
        assert_eq!(plan.keep.len(), 1);
    }
}
