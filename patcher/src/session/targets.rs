//! Where the running program's calls go: which slot points where and which function entries
//! jump where, and the smallest set of slot stores and entry writes that moves from one such
//! state to another (a new patch, a reverted edit, an undo).

use hotreload_abi::protocol::{EntryChange, SlotInfo, SlotUpdate};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What the program runs after a patch, by mangled function name. A slot or function not
/// listed runs its original code.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// Slot implementation → (runtime address of the implementation, its fingerprint).
    pub slots: BTreeMap<String, (u64, u64)>,
    /// Redirected function → runtime address of the version every caller reaches.
    pub entries: BTreeMap<String, u64>,
}

impl Targets {
    /// True when everything runs its original code.
    pub fn is_original(&self) -> bool {
        self.slots.is_empty() && self.entries.is_empty()
    }
}

/// The slot stores that move the slots from `now` to `next`.
pub fn slot_updates(
    slots: &HashMap<String, SlotInfo>,
    now: &Targets,
    next: &Targets,
) -> Vec<SlotUpdate> {
    let names: BTreeSet<&String> = now.slots.keys().chain(next.slots.keys()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let slot = slots.get(name)?;
            let original = (slot.original, slot.fingerprint);
            let from = now.slots.get(name).copied().unwrap_or(original);
            let to = next.slots.get(name).copied().unwrap_or(original);
            (from != to).then_some(SlotUpdate {
                slot: slot.slot,
                fingerprint: to.1,
                target: to.0,
            })
        })
        .collect()
}

/// Every copy of each redirected function the program has mapped, and what each copy's
/// entry holds now. A function's copies are its original in the executable and its versions
/// in patch images: a pointer may have been taken to any of them. The one that should run
/// keeps its own bytes, the executable's entry jumps to it and every other copy jumps to the
/// executable's entry: at most two jumps from any copy, and a patch rewrites at most three
/// entries per function however many images a long session has mapped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EntryCopies {
    /// Function → runtime entries of its copies, the executable's first.
    copies: BTreeMap<String, Vec<u64>>,
    /// Entry → where it jumps now (absent: its original bytes).
    jumps: BTreeMap<u64, u64>,
}

impl EntryCopies {
    /// Notes a copy of `function` at runtime address `entry` (`original` for the
    /// executable's own).
    pub fn add_copy(&mut self, function: &str, original: u64, entry: u64) {
        let copies = self
            .copies
            .entry(function.to_owned())
            .or_insert_with(|| vec![original]);
        if !copies.contains(&entry) {
            copies.push(entry);
        }
    }

    /// The entry writes that make every caller of each function in `now` or `next` reach
    /// the copy `next` names (its original when `next` does not name it).
    pub fn changes_towards(&self, now: &Targets, next: &Targets) -> Vec<EntryChange> {
        let names: BTreeSet<&String> = now.entries.keys().chain(next.entries.keys()).collect();
        let mut changes = Vec::new();
        for name in names {
            let Some(copies) = self.copies.get(name) else {
                continue;
            };
            let original = copies[0];
            let destination = next.entries.get(name).copied().unwrap_or(original);
            for &entry in copies {
                let wanted = match entry {
                    _ if entry == destination => None,
                    _ if entry == original => Some(destination),
                    _ => Some(original),
                };
                if self.jumps.get(&entry).copied() != wanted {
                    changes.push(EntryChange {
                        entry,
                        target: wanted,
                    });
                }
            }
        }
        changes
    }

    /// Forgets where entries jump: they jump as `redirected` says (what the program reports).
    pub fn jump_as(&mut self, redirected: &[EntryChange]) {
        self.jumps.clear();
        self.applied(redirected);
    }

    /// Records that the runtime wrote `changes`.
    pub fn applied(&mut self, changes: &[EntryChange]) {
        for change in changes {
            match change.target {
                Some(target) => self.jumps.insert(change.entry, target),
                None => self.jumps.remove(&change.entry),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(pairs: &[(&str, u64)]) -> Targets {
        Targets {
            slots: BTreeMap::new(),
            entries: pairs.iter().map(|(n, a)| (n.to_string(), *a)).collect(),
        }
    }

    fn change(entry: u64, target: Option<u64>) -> EntryChange {
        EntryChange { entry, target }
    }

    #[test]
    fn a_first_patch_redirects_the_original() {
        let mut copies = EntryCopies::default();
        copies.add_copy("f", 0x1000, 0x9000);
        let patch = copies.changes_towards(&Targets::default(), &entries(&[("f", 0x9000)]));
        assert_eq!(patch, [change(0x1000, Some(0x9000))]);
    }

    #[test]
    fn a_second_patch_redirects_the_original_and_the_first_copy_jumps_to_the_original() {
        let mut copies = EntryCopies::default();
        copies.add_copy("f", 0x1000, 0x9000);
        let first = entries(&[("f", 0x9000)]);
        copies.applied(&copies.changes_towards(&Targets::default(), &first));
        copies.add_copy("f", 0x1000, 0x8000);
        let second = entries(&[("f", 0x8000)]);
        let patch = copies.changes_towards(&first, &second);
        assert_eq!(
            patch,
            [change(0x1000, Some(0x8000)), change(0x9000, Some(0x1000))]
        );
        copies.applied(&patch);
        // Undo: back to the first copy, whose own entry gets its bytes back; a pointer taken
        // to the second copy reaches the first through the original's entry.
        let undo = copies.changes_towards(&second, &first);
        assert_eq!(
            undo,
            [
                change(0x1000, Some(0x9000)),
                change(0x9000, None),
                change(0x8000, Some(0x1000))
            ]
        );
        copies.applied(&undo);
        // And back to the original: its own bytes restored; the copies already jump to it.
        let original = copies.changes_towards(&first, &Targets::default());
        assert_eq!(
            original,
            [change(0x1000, None), change(0x9000, Some(0x1000))]
        );
    }

    #[test]
    fn a_patch_writes_three_entries_however_many_copies_there_are() {
        let mut copies = EntryCopies::default();
        let mut now = Targets::default();
        for patch in 1..=1000u64 {
            let copy = 0x10_0000 + patch * 0x1000;
            copies.add_copy("f", 0x1000, copy);
            let next = entries(&[("f", copy)]);
            let changes = copies.changes_towards(&now, &next);
            assert!(changes.len() <= 2, "patch {patch}: {changes:?}");
            copies.applied(&changes);
            now = next;
        }
        // Undo to any earlier copy: the original's entry, that copy's, the current one's.
        let back = entries(&[("f", 0x10_0000 + 500 * 0x1000)]);
        assert_eq!(copies.changes_towards(&now, &back).len(), 3);
    }

    #[test]
    fn nothing_to_write_when_the_entries_already_point_there() {
        let mut copies = EntryCopies::default();
        copies.add_copy("f", 0x1000, 0x9000);
        let first = entries(&[("f", 0x9000)]);
        copies.applied(&copies.changes_towards(&Targets::default(), &first));
        assert!(copies.changes_towards(&first, &first).is_empty());
    }

    #[test]
    fn slot_updates_move_only_what_differs() {
        let info = |slot, original| SlotInfo {
            path: "p".into(),
            fingerprint: 7,
            slot,
            original,
            current: original,
        };
        let slots: HashMap<String, SlotInfo> = [
            ("a".to_string(), info(1, 0x100)),
            ("b".to_string(), info(2, 0x200)),
        ]
        .into();
        let now = Targets {
            slots: [("a".to_string(), (0x900, 7))].into(),
            entries: BTreeMap::new(),
        };
        let next = Targets {
            slots: [("b".to_string(), (0x800, 7))].into(),
            entries: BTreeMap::new(),
        };
        let updates = slot_updates(&slots, &now, &next);
        assert_eq!(
            updates,
            [
                SlotUpdate {
                    slot: 1,
                    fingerprint: 7,
                    target: 0x100
                },
                SlotUpdate {
                    slot: 2,
                    fingerprint: 7,
                    target: 0x800
                }
            ]
        );
        assert!(slot_updates(&slots, &next, &next).is_empty());
    }

    #[test]
    fn two_functions_move_together_and_one_can_go_back_alone() {
        let mut copies = EntryCopies::default();
        copies.add_copy("f", 0x1000, 0x9000);
        copies.add_copy("g", 0x2000, 0x9100);
        let both = entries(&[("f", 0x9000), ("g", 0x9100)]);
        let patch = copies.changes_towards(&Targets::default(), &both);
        assert_eq!(
            patch,
            [change(0x1000, Some(0x9000)), change(0x2000, Some(0x9100))]
        );
        copies.applied(&patch);
        // `g`'s edit reverted: only `g`'s copies are written.
        let only_f = entries(&[("f", 0x9000)]);
        assert_eq!(
            copies.changes_towards(&both, &only_f),
            [change(0x2000, None), change(0x9100, Some(0x2000))]
        );
    }

    #[test]
    fn a_function_first_redirected_by_the_second_patch() {
        let mut copies = EntryCopies::default();
        copies.add_copy("f", 0x1000, 0x9000);
        let first = entries(&[("f", 0x9000)]);
        copies.applied(&copies.changes_towards(&Targets::default(), &first));
        copies.add_copy("f", 0x1000, 0x8000);
        copies.add_copy("g", 0x2000, 0x8100);
        let second = entries(&[("f", 0x8000), ("g", 0x8100)]);
        let patch = copies.changes_towards(&first, &second);
        assert_eq!(
            patch,
            [
                change(0x1000, Some(0x8000)),
                change(0x9000, Some(0x1000)),
                change(0x2000, Some(0x8100))
            ]
        );
        copies.applied(&patch);
        // Undo: `g` runs its original again, its new copy jumps back to it.
        let undo = copies.changes_towards(&second, &first);
        assert!(undo.contains(&change(0x2000, None)), "{undo:?}");
        assert!(undo.contains(&change(0x8100, Some(0x2000))), "{undo:?}");
        assert_eq!(undo.len(), 5, "{undo:?}");
    }

    #[test]
    fn functions_without_known_copies_are_left_alone() {
        let copies = EntryCopies::default();
        let next = entries(&[("unmapped", 0x9000)]);
        assert!(copies
            .changes_towards(&Targets::default(), &next)
            .is_empty());
    }

    #[test]
    fn slot_updates_follow_fingerprints_and_skip_unknown_slots() {
        let slots: HashMap<String, SlotInfo> = [(
            "a".to_string(),
            SlotInfo {
                path: "p".into(),
                fingerprint: 7,
                slot: 1,
                original: 0x100,
                current: 0x100,
            },
        )]
        .into();
        let targets = |fingerprint| Targets {
            slots: [
                ("a".to_string(), (0x900, fingerprint)),
                ("unknown".to_string(), (0x950, fingerprint)),
            ]
            .into(),
            entries: BTreeMap::new(),
        };
        // Same address, new signature fingerprint: the slot is stored again.
        assert_eq!(
            slot_updates(&slots, &targets(7), &targets(8)),
            [SlotUpdate {
                slot: 1,
                fingerprint: 8,
                target: 0x900
            }]
        );
    }
}
