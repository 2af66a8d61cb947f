//! Slot bookkeeping: which service chain owns which range of keys in the `endpoints` map
//! (see [`super::plan`]). A chain keeps its slot for as long as it exists, so its rule stays
//! byte-for-byte the same across endpoint changes and the kernel never re-validates the
//! table for them; freed slots are reused.

use std::collections::HashMap;

use super::plan::SLOTS;

/// Slots handed out to chains.
#[derive(Debug, Default)]
pub struct Slots {
    by_chain: HashMap<String, u32>,
    free: Vec<u32>,
    next: u32,
    limit: Option<u32>,
}

impl Slots {
    /// An allocator of at most `limit` slots (tests); [`Slots::default`] has all of them.
    pub fn with_limit(limit: u32) -> Self {
        Slots { limit: Some(limit), ..Slots::default() }
    }

    /// The slot of `chain`, allocating one if it has none; `None` when all are taken.
    pub fn get(&mut self, chain: &str) -> Option<u32> {
        if let Some(s) = self.by_chain.get(chain) {
            return Some(*s);
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.next < self.limit.unwrap_or(SLOTS).min(SLOTS) => {
                self.next += 1;
                self.next - 1
            }
            None => return None,
        };
        self.by_chain.insert(chain.to_string(), slot);
        Some(slot)
    }

    /// Returns `chain`'s slot (if any) for reuse.
    pub fn release(&mut self, chain: &str) {
        if let Some(s) = self.by_chain.remove(chain) {
            self.free.push(s);
        }
    }

    /// Forgets every allocation (before a full sync assigns them anew).
    pub fn clear(&mut self) {
        let limit = self.limit;
        *self = Slots { limit, ..Slots::default() };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_keeps_its_slot_and_freed_slots_are_reused() {
        let mut s = Slots::with_limit(2);
        assert_eq!(s.get("a"), Some(0));
        assert_eq!(s.get("b"), Some(1));
        assert_eq!(s.get("a"), Some(0), "same chain, same slot");
        assert_eq!(s.get("c"), None, "all taken");
        s.release("a");
        assert_eq!(s.get("c"), Some(0));
        s.clear();
        assert_eq!(s.get("b"), Some(0));
    }
}
