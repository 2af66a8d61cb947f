//! Names of containers and sandboxes by id, each read once from its record: a name never changes
//! after creation and ids are never reused. Finding a pod's own containers or its sandbox by
//! name then reads only the matching records, not every record on the node (the agent looks at
//! each pod every second: reading all records each time was quadratic in the pods).

use std::collections::HashMap;
use std::sync::Mutex;

/// Id → name, for the ids of one state directory (containers or sandboxes).
#[derive(Default)]
pub(crate) struct NameIndex {
    names: Mutex<HashMap<String, String>>,
}

impl NameIndex {
    /// `(id, name)` for each of `ids` (the directory's current listing) whose name is known or
    /// can be read with `load`; ids no longer listed are forgotten. `load` answering `None` (a
    /// record still being written, or unreadable) is tried again next time.
    pub(crate) fn names(
        &self,
        ids: Vec<String>,
        load: impl Fn(&str) -> Option<String>,
    ) -> Vec<(String, String)> {
        let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
        names.retain(|id, _| ids.binary_search(id).is_ok());
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let name = match names.get(&id) {
                Some(name) => name.clone(),
                None => match load(&id) {
                    Some(name) => {
                        names.insert(id.clone(), name.clone());
                        name
                    }
                    None => continue,
                },
            };
            out.push((id, name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn names_are_read_once_and_forgotten_with_their_ids() {
        let index = NameIndex::default();
        let loads = Cell::new(0);
        let load = |id: &str| {
            loads.set(loads.get() + 1);
            (id != "c").then(|| format!("name-{id}"))
        };
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let first = index.names(ids(&["a", "b", "c"]), load);
        assert_eq!(first, [("a".into(), "name-a".into()), ("b".into(), "name-b".into())]);
        assert_eq!(loads.get(), 3);
        // Known names are not read again; an unreadable record is retried.
        index.names(ids(&["a", "b", "c"]), load);
        assert_eq!(loads.get(), 4);
        // A removed id is forgotten: if it came back it would be read again.
        index.names(ids(&["b"]), load);
        index.names(ids(&["a", "b"]), load);
        assert_eq!(loads.get(), 5);
    }
}
