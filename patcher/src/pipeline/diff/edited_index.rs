//! A revision's symbols as the base's, with the names an edit touched replaced: what an
//! incremental diff knows of the new revision without indexing its unchanged objects.

use crate::pipeline::objects::symbols::{IndexedSymbol, SymbolIndex};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The new revision's symbols and who refers to whom, as a shared index plus the names whose
/// definitions differ from it.
#[derive(Debug, Clone, Default)]
pub struct EditedIndex {
    base: Arc<SymbolIndex>,
    /// Name → its symbol in the new revision (`None`: no longer defined); shared with the
    /// next build's index, which starts from this one's.
    replaced: BTreeMap<String, Option<Arc<IndexedSymbol>>>,
    /// Referrers the replaced symbols gained and lost, by the name referred to.
    gained: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
    lost: BTreeMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl EditedIndex {
    /// `base` itself.
    pub fn unedited(base: Arc<SymbolIndex>) -> EditedIndex {
        EditedIndex {
            base,
            ..EditedIndex::default()
        }
    }

    /// `base` with each name of `replaced` defined as given there (or no longer, for `None`).
    pub fn new(
        base: Arc<SymbolIndex>,
        replaced: BTreeMap<String, Option<Arc<IndexedSymbol>>>,
    ) -> EditedIndex {
        let mut gained: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
        let mut lost: BTreeMap<Arc<str>, BTreeSet<Arc<str>>> = BTreeMap::new();
        let none = BTreeSet::new();
        for (name, symbol) in &replaced {
            let before = base.get(name).map_or(&none, |symbol| &symbol.references);
            let after = symbol.as_ref().map_or(&none, |symbol| &symbol.references);
            let name: Arc<str> = Arc::from(name.as_str());
            for target in after.difference(before) {
                gained
                    .entry(Arc::clone(target))
                    .or_default()
                    .insert(Arc::clone(&name));
            }
            for target in before.difference(after) {
                lost.entry(Arc::clone(target))
                    .or_default()
                    .insert(Arc::clone(&name));
            }
        }
        EditedIndex {
            base,
            replaced,
            gained,
            lost,
        }
    }

    /// The index it edits.
    pub fn base(&self) -> &Arc<SymbolIndex> {
        &self.base
    }

    /// The names defined differently from the base (not necessarily with other contents).
    pub fn replaced(&self) -> &BTreeMap<String, Option<Arc<IndexedSymbol>>> {
        &self.replaced
    }

    pub fn get(&self, name: &str) -> Option<&IndexedSymbol> {
        match self.replaced.get(name) {
            Some(replaced) => replaced.as_deref(),
            None => self.base.get(name),
        }
    }

    /// The symbols that refer to `name`, ordered by mangled name.
    pub fn referrers_of(&self, name: &str) -> BTreeSet<&str> {
        let lost = self.lost.get(name);
        let kept = self
            .base
            .referrers_of(name)
            .into_iter()
            .flatten()
            .filter(|referrer| !lost.is_some_and(|lost| lost.contains(*referrer)));
        kept.chain(self.gained.get(name).into_iter().flatten())
            .map(|referrer| &**referrer)
            .collect()
    }
}
