//! What an edit changed, symbol by symbol, and who refers to what.

use crate::pipeline::objects::symbols::{Definition, IndexedSymbol, SymbolIndex, SymbolKind};
use linker_shim::{Result, Revision};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

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
    /// Every symbol of both revisions, ordered by status then mangled name.
    pub symbols: Vec<SymbolChange>,
    pub layout_changes: Vec<LayoutChange>,
    /// For each symbol of the new revision, the symbols of the new revision that refer to it
    /// (directly, or through anonymous data such as a vtable).
    pub referrers: BTreeMap<String, BTreeSet<String>>,
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
    Ok(SymbolDiff::between(&old_index?, &new_index?))
}

/// `_ZN3app4main17h0123456789abcdefE` → `app::main`.
pub fn demangle(mangled: &str) -> String {
    format!("{:#}", rustc_demangle::demangle(mangled))
}

impl SymbolDiff {
    /// Classifies every symbol of `old` and `new`.
    pub fn between(old: &SymbolIndex, new: &SymbolIndex) -> SymbolDiff {
        let mut symbols = Vec::with_capacity(new.len());
        let mut layout_changes = Vec::new();
        for symbol in new.iter() {
            let status = match old.get(&symbol.name) {
                None => ChangeStatus::Added,
                Some(previous) if previous.fingerprint == symbol.fingerprint => {
                    ChangeStatus::Unchanged
                }
                Some(_) => ChangeStatus::Changed,
            };
            if let Some(previous) = old.get(&symbol.name) {
                if is_data(symbol.kind) && layout_differs(previous, symbol) {
                    layout_changes.push(layout_change(previous, symbol));
                }
            }
            symbols.push(change(symbol, status));
        }
        symbols.extend(
            old.iter()
                .filter(|s| new.get(&s.name).is_none())
                .map(|s| change(s, ChangeStatus::Removed)),
        );
        layout_changes.extend(renamed_data(&symbols, old, new));
        symbols.sort_by(|a, b| (a.status, &a.mangled).cmp(&(b.status, &b.mangled)));

        let mut referrers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for symbol in new.iter() {
            for target in &symbol.references {
                referrers
                    .entry(target.clone())
                    .or_default()
                    .insert(symbol.name.clone());
            }
        }
        SymbolDiff {
            symbols,
            layout_changes,
            referrers,
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

    /// Symbols of the new revision that refer to `name`.
    pub fn referrers_of(&self, name: &str) -> impl Iterator<Item = &str> {
        self.referrers
            .get(name)
            .into_iter()
            .flatten()
            .map(String::as_str)
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

fn change(symbol: &IndexedSymbol, status: ChangeStatus) -> SymbolChange {
    SymbolChange {
        mangled: symbol.name.clone(),
        demangled: demangle(&symbol.name),
        kind: symbol.kind,
        status,
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
fn renamed_data(
    symbols: &[SymbolChange],
    old: &SymbolIndex,
    new: &SymbolIndex,
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
            Some(layout_change(old.get(old_name)?, new.get(new_name)?))
        })
        .collect()
}
