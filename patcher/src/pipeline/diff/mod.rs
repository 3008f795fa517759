//! What an edit changed, symbol by symbol, and who refers to what.
//!
//! [`SymbolDiff::between`] compares two whole indexes (`hotpatch diff`); a session compares
//! only the objects an edit rewrote ([`SymbolDiff::incremental`]), with equal results.

mod edited_index;
mod incremental;

use crate::pipeline::objects::symbols::{Definition, IndexedSymbol, SymbolIndex, SymbolKind};
pub use edited_index::EditedIndex;
pub use incremental::LatestBuild;
use linker_shim::{Result, Revision};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

/// How one symbol differs between two revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChangeStatus {
    Changed,
    Added,
    Removed,
    Unchanged,
}

/// One symbol's classification.
#[derive(Debug, Clone)]
pub struct SymbolChange {
    pub mangled: String,
    /// Demangled path without the hash, e.g. `demo_app::physics::step`.
    pub demangled: String,
    pub kind: SymbolKind,
    pub status: ChangeStatus,
    /// Its contents' fingerprint, in the new revision (the old one if it was removed).
    pub fingerprint: u64,
    /// Where the symbol is defined: in the new revision, or the old one if it was removed.
    pub definitions: Vec<Definition>,
}

/// A data object (static or thread-local) whose size or output section changed. A patch can
/// not migrate such data, so these edits need a restart. When the type of a static changes
/// rustc also changes its mangled name, so `old` and `new` may differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayoutChange {
    pub old: String,
    pub new: String,
    pub demangled: String,
    pub kind: SymbolKind,
    pub old_size: u64,
    pub new_size: u64,
    pub old_section: String,
    pub new_section: String,
}

/// The difference between two revisions.
#[derive(Debug, Clone, Default)]
pub struct SymbolDiff {
    /// The symbols compared, ordered by status then mangled name: every symbol of both
    /// revisions, or for an incremental diff those changed, added or removed.
    pub symbols: Vec<SymbolChange>,
    pub layout_changes: Vec<LayoutChange>,
    /// The new revision's symbols, and for each the symbols that refer to it.
    pub new: EditedIndex,
}

/// Loads both revisions' symbols (in parallel) and compares them.
pub fn diff(old: &Revision, new: &Revision) -> Result<SymbolDiff> {
    let (old_index, new_index) = std::thread::scope(|scope| {
        let old_index = scope.spawn(|| SymbolIndex::load(old));
        let new_index = SymbolIndex::load(new);
        (
            old_index.join().expect("indexing does not panic"),
            new_index,
        )
    });
    Ok(SymbolDiff::between(&old_index?, new_index?))
}

/// `_ZN3app4main17h0123456789abcdefE` → `app::main`.
pub fn demangle(mangled: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(mangled))
}

/// Demangled names of `mangled`, in order, told apart: the instances of a generic (legacy
/// mangling names them all `app::f`) keep the hash that distinguishes them
/// (`app::f::h0123456789abcdef`).
pub fn distinct_names<'a>(mangled: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mangled: Vec<&str> = mangled.into_iter().collect();
    let short: Vec<String> = mangled.iter().map(|name| demangle(name)).collect();
    short
        .iter()
        .zip(&mangled)
        .map(|(name, full)| {
            if short.iter().filter(|other| *other == name).count() > 1 {
                rustc_demangle::demangle(full).to_string()
            } else {
                name.clone()
            }
        })
        .collect()
}

impl SymbolDiff {
    /// Classifies every symbol of `old` and `new`.
    pub fn between(old: &SymbolIndex, new: SymbolIndex) -> SymbolDiff {
        let (symbols, layout_changes) = classify_all(old, &new, Unchanged::Listed);
        SymbolDiff {
            symbols,
            layout_changes,
            new: EditedIndex::unedited(Arc::new(new)),
        }
    }

    /// Symbols with `status`, in mangled-name order.
    pub fn with_status(&self, status: ChangeStatus) -> impl Iterator<Item = &SymbolChange> {
        self.symbols
            .iter()
            .filter(move |symbol| symbol.status == status)
    }

    pub fn count(&self, status: ChangeStatus) -> usize {
        self.with_status(status).count()
    }

    /// True when the edit changed no symbol at all.
    pub fn is_empty(&self) -> bool {
        self.symbols
            .iter()
            .all(|symbol| symbol.status == ChangeStatus::Unchanged)
            && self.layout_changes.is_empty()
    }

    /// Symbols of the new revision that refer to `name`, in mangled-name order.
    pub fn referrers_of(&self, name: &str) -> impl Iterator<Item = &str> {
        self.new.referrers_of(name).into_iter()
    }

    /// Everything that refers to `starts`, transitively, not walking past symbols for which
    /// `is_root` holds (they are included, their referrers are not). This is the set of
    /// unchanged callers a patch must relink so they call the new code, when the roots are
    /// the `#[hotreload]` slot implementations.
    pub fn referrer_closure<'a>(
        &self,
        starts: impl IntoIterator<Item = &'a str>,
        is_root: impl Fn(&str) -> bool,
    ) -> BTreeSet<String> {
        let mut reached = BTreeSet::new();
        let mut queue: VecDeque<&str> = starts.into_iter().collect();
        while let Some(name) = queue.pop_front() {
            for referrer in self.referrers_of(name) {
                if reached.insert(referrer.to_owned()) && !is_root(referrer) {
                    queue.push_back(referrer);
                }
            }
        }
        reached
    }
}

/// [`classify`] of every name either index has.
fn classify_all(
    old: &SymbolIndex,
    new: &SymbolIndex,
    unchanged: Unchanged,
) -> (Vec<SymbolChange>, Vec<LayoutChange>) {
    let names: BTreeSet<&str> = new
        .iter()
        .chain(old.iter())
        .map(|symbol| symbol.name.as_str())
        .collect();
    classify(names, |name| old.get(name), |name| new.get(name), unchanged)
}

/// Whether [`classify`] lists unchanged symbols.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unchanged {
    Listed,
    /// Left out (a patch needs what changed only; naming the rest costs a demangle each).
    Left,
}

/// The status of each of `names` between the revisions whose symbols `old` and `new` look
/// up, ordered by status then mangled name, and the data among them that changed layout.
fn classify<'a>(
    names: impl IntoIterator<Item = &'a str>,
    old: impl Fn(&str) -> Option<&'a IndexedSymbol>,
    new: impl Fn(&str) -> Option<&'a IndexedSymbol>,
    unchanged: Unchanged,
) -> (Vec<SymbolChange>, Vec<LayoutChange>) {
    let mut symbols = Vec::new();
    let mut layout_changes = Vec::new();
    for name in names {
        let change = match (old(name), new(name)) {
            (None, None) => continue,
            (None, Some(added)) => change(added, ChangeStatus::Added),
            (Some(removed), None) => change(removed, ChangeStatus::Removed),
            (Some(previous), Some(symbol)) => {
                if is_data(symbol.kind) && layout_differs(previous, symbol) {
                    layout_changes.push(layout_change(previous, symbol));
                }
                if previous.fingerprint != symbol.fingerprint {
                    change(symbol, ChangeStatus::Changed)
                } else if unchanged == Unchanged::Listed {
                    change(symbol, ChangeStatus::Unchanged)
                } else {
                    continue;
                }
            }
        };
        symbols.push(change);
    }
    symbols.sort_by(|a, b| (a.status, &a.mangled).cmp(&(b.status, &b.mangled)));
    layout_changes.extend(renamed_data(&symbols, &old, &new));
    (symbols, layout_changes)
}

fn change(symbol: &IndexedSymbol, status: ChangeStatus) -> SymbolChange {
    SymbolChange {
        mangled: symbol.name.clone(),
        demangled: demangle(&symbol.name),
        kind: symbol.kind,
        status,
        fingerprint: symbol.fingerprint,
        definitions: symbol.definitions.clone(),
    }
}

fn is_data(kind: SymbolKind) -> bool {
    matches!(kind, SymbolKind::Data | SymbolKind::ThreadLocal)
}

fn layout_differs(old: &IndexedSymbol, new: &IndexedSymbol) -> bool {
    old.size != new.size || old.section_class != new.section_class || old.kind != new.kind
}

fn layout_change(old: &IndexedSymbol, new: &IndexedSymbol) -> LayoutChange {
    LayoutChange {
        old: old.name.clone(),
        new: new.name.clone(),
        demangled: demangle(&new.name),
        kind: new.kind,
        old_size: old.size,
        new_size: new.size,
        old_section: old.section_class.clone(),
        new_section: new.section_class.clone(),
    }
}

/// Data removed under one mangled name and added under another with the same path: the
/// same static with a new type (the legacy symbol hash covers the type).
fn renamed_data<'a>(
    symbols: &[SymbolChange],
    old: impl Fn(&str) -> Option<&'a IndexedSymbol>,
    new: impl Fn(&str) -> Option<&'a IndexedSymbol>,
) -> Vec<LayoutChange> {
    let unique_by_path = |status: ChangeStatus| {
        let mut by_path: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for symbol in symbols
            .iter()
            .filter(|s| s.status == status && is_data(s.kind))
        {
            by_path
                .entry(&symbol.demangled)
                .or_default()
                .push(&symbol.mangled);
        }
        by_path
            .into_iter()
            .filter_map(|(path, names)| (names.len() == 1).then(|| (path, names[0])))
            .collect::<BTreeMap<_, _>>()
    };
    let removed = unique_by_path(ChangeStatus::Removed);
    let added = unique_by_path(ChangeStatus::Added);
    removed
        .iter()
        .filter_map(|(path, old_name)| {
            let new_name = added.get(path)?;
            Some(layout_change(old(old_name)?, new(new_name)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::objects::symbols::synthetic::{
        function, index, mangled, mangled_with_hash, symbol,
    };

    fn names(diff: &SymbolDiff, status: ChangeStatus) -> Vec<&str> {
        diff.with_status(status)
            .map(|s| s.demangled.as_str())
            .collect()
    }

    #[test]
    fn symbols_are_classified_by_name_and_fingerprint() {
        let old = [
            function("app::edited"),
            function("app::same"),
            function("app::gone"),
        ];
        let new = [
            function("app::edited").version(1),
            function("app::same"),
            function("app::fresh"),
        ];
        let diff = SymbolDiff::between(&index(&old), index(&new));
        assert_eq!(names(&diff, ChangeStatus::Changed), ["app::edited"]);
        assert_eq!(names(&diff, ChangeStatus::Unchanged), ["app::same"]);
        assert_eq!(names(&diff, ChangeStatus::Added), ["app::fresh"]);
        assert_eq!(names(&diff, ChangeStatus::Removed), ["app::gone"]);
        let statuses: Vec<_> = diff.symbols.iter().map(|s| s.status).collect();
        assert!(statuses.is_sorted(), "ordered by status: {statuses:?}");
        assert!(!diff.is_empty());
        assert!(diff.layout_changes.is_empty());
        let removed = diff.with_status(ChangeStatus::Removed).next().unwrap();
        assert_eq!(removed.definitions, old[2].definitions);
    }

    #[test]
    fn instances_of_a_generic_keep_their_hash() {
        let one = mangled_with_hash("app::f", 1);
        let two = mangled_with_hash("app::f", 2);
        let other = mangled("app::g");
        assert_eq!(
            distinct_names([one.as_str(), two.as_str(), other.as_str()]),
            [
                "app::f::h0000000000000001",
                "app::f::h0000000000000002",
                "app::g"
            ]
        );
    }

    #[test]
    fn identical_revisions_differ_in_nothing() {
        let symbols = [function("app::f"), symbol("app::TABLE", SymbolKind::Data)];
        let diff = SymbolDiff::between(&index(&symbols), index(&symbols));
        assert!(diff.is_empty());
        assert_eq!(diff.count(ChangeStatus::Unchanged), 2);
    }

    #[test]
    fn data_that_changed_size_or_section_is_a_layout_change() {
        let old = [
            symbol("app::GROWN", SymbolKind::Data).laid_out(8, ".bss"),
            symbol("app::MOVED", SymbolKind::Data).laid_out(8, ".bss"),
            symbol("app::KEPT", SymbolKind::Data).laid_out(8, ".bss"),
            function("app::f").laid_out(8, ".text"),
        ];
        let new = [
            symbol("app::GROWN", SymbolKind::Data).laid_out(16, ".bss"),
            symbol("app::MOVED", SymbolKind::Data).laid_out(8, ".data"),
            symbol("app::KEPT", SymbolKind::Data)
                .laid_out(8, ".bss")
                .version(1),
            // A function may change size: its callers are relinked, nothing is migrated.
            function("app::f").laid_out(32, ".text"),
        ];
        let diff = SymbolDiff::between(&index(&old), index(&new));
        let changes: Vec<_> = diff
            .layout_changes
            .iter()
            .map(|c| {
                (
                    c.demangled.as_str(),
                    c.old_size,
                    c.new_size,
                    c.old_section.as_str(),
                    c.new_section.as_str(),
                )
            })
            .collect();
        assert_eq!(
            changes,
            [
                ("app::GROWN", 8, 16, ".bss", ".bss"),
                ("app::MOVED", 8, 8, ".bss", ".data")
            ]
        );
        assert_eq!(diff.layout_changes[0].old, diff.layout_changes[0].new);
    }

    #[test]
    fn renamed_data_is_paired_by_its_path() {
        let old = [
            symbol("app::STATE", SymbolKind::Data).laid_out(8, ".bss"),
            function("app::f"),
        ];
        let new = [
            symbol("app::STATE", SymbolKind::Data)
                .laid_out(24, ".bss")
                .renamed(0xfeed),
            // Functions renamed are removed + added, not a layout change.
            function("app::f").renamed(0xfeed),
        ];
        let diff = SymbolDiff::between(&index(&old), index(&new));
        assert_eq!(diff.layout_changes.len(), 1, "{:?}", diff.layout_changes);
        let change = &diff.layout_changes[0];
        assert_eq!(change.demangled, "app::STATE");
        assert_eq!(
            (change.old.as_str(), change.new.as_str()),
            (old[0].name.as_str(), new[0].name.as_str())
        );
        assert_ne!(change.old, change.new);
        assert_eq!((change.old_size, change.new_size), (8, 24));
    }

    #[test]
    fn renamed_data_with_an_ambiguous_path_is_not_paired() {
        let old = [symbol("app::X", SymbolKind::Data)];
        let new = [
            symbol("app::X", SymbolKind::Data).renamed(1),
            symbol("app::X", SymbolKind::Data).renamed(2),
        ];
        let diff = SymbolDiff::between(&index(&old), index(&new));
        assert!(diff.layout_changes.is_empty());
        assert_eq!(diff.count(ChangeStatus::Added), 2);
    }

    /// Demangled names, sorted.
    fn paths<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        names
            .into_iter()
            .map(demangle)
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect()
    }

    /// `top → root → middle → leaf`, plus `other → leaf`, and `middle ↔ twin` (a cycle); in
    /// the old revision only, `gone → leaf`.
    fn call_graph() -> SymbolDiff {
        let leaf = function("app::leaf");
        let middle = function("app::middle").referring_to(&[&leaf, &function("app::twin")]);
        let twin = function("app::twin").referring_to(&[&middle]);
        let root = function("app::root").referring_to(&[&middle]);
        let top = function("app::top").referring_to(&[&root]);
        let other = function("app::other").referring_to(&[&leaf]);
        let gone = function("app::gone").referring_to(&[&leaf]);
        let new = [leaf, middle, twin, root, top, other];
        let old = new.iter().chain([&gone]);
        SymbolDiff::between(&index(old), index(&new))
    }

    #[test]
    fn referrers_are_the_direct_referrers_in_the_new_revision() {
        let diff = call_graph();
        let referrers = paths(diff.referrers_of(&mangled("app::leaf")));
        assert_eq!(referrers, ["app::middle", "app::other"]);
        assert_eq!(diff.referrers_of(&mangled("app::top")).count(), 0);
        assert_eq!(diff.referrers_of("not-a-symbol").count(), 0);
    }

    #[test]
    fn referrer_closure_stops_at_roots() {
        let diff = call_graph();
        let root = mangled("app::root");
        let closure = diff.referrer_closure([mangled("app::leaf").as_str()], |name| name == root);
        let reached = paths(closure.iter().map(String::as_str));
        // `root` is included, `top` (which calls only `root`) is not; the cycle ends.
        assert_eq!(
            reached,
            ["app::middle", "app::other", "app::root", "app::twin"]
        );
        let without_roots = diff.referrer_closure([mangled("app::leaf").as_str()], |_| false);
        assert!(without_roots.contains(&mangled("app::top")));
    }
}
