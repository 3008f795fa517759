//! The diff of a patch build against the base, from the objects that differ from the
//! previous build only.
//!
//! Incremental compilation rewrites the codegen units an edit touched and reuses the others,
//! and the store names each object after its contents: an object the previous build had too
//! can define nothing new. So only the names that differing objects define (in either build)
//! are merged again; every other symbol, and who refers to it, is as the previous build had
//! it. That build is known as an *anchor* indexed in full — the base, or the warm-up's build
//! of the same sources — plus the names edits replaced since; what is classified against the
//! running base is those names and the few in which the anchor differs from it.

use super::{classify, classify_all, EditedIndex, SymbolDiff, Unchanged};
use crate::pipeline::objects::cache::{RevisionObjects, StoredObject};
use crate::pipeline::objects::symbols::{merge_copies, IndexedSymbol, SymbolIndex};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

/// The newest build compared so far: its objects and symbols (at first, the base's).
#[derive(Debug, Clone)]
pub struct LatestBuild {
    pub objects: RevisionObjects,
    /// Its symbols: the anchor's full index plus the names edits replaced since.
    pub symbols: EditedIndex,
    /// The running base's index, which every build is classified against.
    running: Arc<SymbolIndex>,
    /// The names whose symbols differ between the anchor and the running base (none when
    /// the anchor is the base).
    anchor_changes: Arc<BTreeSet<String>>,
}

impl LatestBuild {
    /// The running base's own build, indexed as `index`.
    pub fn base(objects: RevisionObjects, index: Arc<SymbolIndex>) -> LatestBuild {
        LatestBuild {
            objects,
            symbols: EditedIndex::unedited(Arc::clone(&index)),
            running: index,
            anchor_changes: Arc::default(),
        }
    }

    /// A build indexed in full and compared with the `running` base once (the warm-up's:
    /// built in another output directory than the base, it shares none of its objects, so
    /// comparing it object by object would gain nothing), the anchor of the builds after it.
    pub fn anchored(objects: RevisionObjects, running: Arc<SymbolIndex>) -> LatestBuild {
        let index = Arc::new(SymbolIndex::of(&objects));
        let (changed, layout_changes) = classify_all(&running, &index, Unchanged::Left);
        let anchor_changes = changed
            .into_iter()
            .map(|symbol| symbol.mangled)
            .chain(layout_changes.into_iter().flat_map(|c| [c.old, c.new]))
            .collect();
        LatestBuild {
            objects,
            symbols: EditedIndex::unedited(index),
            running,
            anchor_changes: Arc::new(anchor_changes),
        }
    }

    /// The running base's index.
    pub fn running(&self) -> &Arc<SymbolIndex> {
        &self.running
    }

    /// The build of `objects`, whose [`SymbolDiff::incremental`] from this one is `diff`.
    pub fn after(&self, objects: RevisionObjects, diff: &SymbolDiff) -> LatestBuild {
        LatestBuild {
            objects,
            symbols: diff.new.clone(),
            running: Arc::clone(&self.running),
            anchor_changes: Arc::clone(&self.anchor_changes),
        }
    }
}

impl SymbolDiff {
    /// Compares `new` with the base, reading only the symbols of objects that one of `new`
    /// and the `latest` build has and the other hasn't. Equal to [`SymbolDiff::between`] the
    /// base's and `new`'s full indexes, except that `symbols` lists no unchanged symbol.
    pub fn incremental(latest: &LatestBuild, new: &RevisionObjects) -> SymbolDiff {
        let in_latest: HashSet<&Path> = paths(&latest.objects).collect();
        let in_new: HashSet<&Path> = paths(new).collect();
        let added: Vec<&StoredObject> = new
            .objects
            .iter()
            .filter(|object| !in_latest.contains(object.path.as_path()))
            .collect();
        let removed = latest
            .objects
            .objects
            .iter()
            .filter(|object| !in_new.contains(object.path.as_path()));

        // The new build's copies of each touched name in the objects it added.
        let mut added_copies: HashMap<&str, Vec<&Arc<IndexedSymbol>>> = HashMap::new();
        for symbol in added.iter().flat_map(|object| object.symbols()) {
            added_copies.entry(&symbol.name).or_default().push(symbol);
        }
        let touched: BTreeSet<&str> = removed
            .flat_map(|object| object.symbols())
            .map(|symbol| symbol.name.as_str())
            .chain(added_copies.keys().copied())
            .collect();

        let kept_objects: HashMap<&Path, &StoredObject> = new
            .objects
            .iter()
            .filter(|object| in_latest.contains(object.path.as_path()))
            .map(|object| (object.path.as_path(), object))
            .collect();
        let mut replaced = latest.symbols.replaced().clone();
        for &name in &touched {
            let mut copies = kept_copies(latest.symbols.get(name), &kept_objects);
            copies.extend(added_copies.get(name).into_iter().flatten());
            replaced.insert(name.to_owned(), merge_copies(copies));
        }

        let edited = EditedIndex::new(Arc::clone(latest.symbols.base()), replaced);
        let compared: BTreeSet<&str> = edited
            .replaced()
            .keys()
            .chain(latest.anchor_changes.iter())
            .map(String::as_str)
            .collect();
        let running = &latest.running;
        let (symbols, layout_changes) = classify(
            compared,
            |name| running.get(name),
            |name| edited.get(name),
            Unchanged::Left,
        );
        SymbolDiff {
            symbols,
            layout_changes,
            new: edited,
        }
    }
}

fn paths(objects: &RevisionObjects) -> impl Iterator<Item = &Path> {
    objects.objects.iter().map(|object| object.path.as_path())
}

/// The copies of `symbol` (as the latest build merged it) in the objects the new build kept.
fn kept_copies<'a>(
    symbol: Option<&IndexedSymbol>,
    kept_objects: &HashMap<&Path, &'a StoredObject>,
) -> Vec<&'a Arc<IndexedSymbol>> {
    let Some(symbol) = symbol else {
        return Vec::new();
    };
    let objects: BTreeSet<&Path> = symbol
        .definitions
        .iter()
        .map(|definition| &*definition.object)
        .collect();
    objects
        .into_iter()
        .filter_map(|path| kept_objects.get(path))
        .flat_map(|object| object.symbols())
        .filter(|copy| copy.name == symbol.name)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::diff::ChangeStatus;
    use crate::pipeline::objects::symbols::synthetic::{
        function, mangled, object, revision, symbol,
    };
    use crate::pipeline::objects::symbols::SymbolIndex;
    use crate::pipeline::objects::symbols::SymbolKind;
    use proptest::prelude::*;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    /// Both diffs of `base` → `new`: the incremental one, after checking it says what the
    /// diff of the two full indexes says.
    fn diffs(base: &RevisionObjects, new: &RevisionObjects) -> SymbolDiff {
        let base_index = Arc::new(SymbolIndex::of(base));
        let latest = LatestBuild::base(base.clone(), base_index.clone());
        checked(&base_index, &latest, new)
    }

    /// The incremental diff of `new` after `latest`, checked against the full diff from the
    /// base.
    fn checked(
        base_index: &Arc<SymbolIndex>,
        latest: &LatestBuild,
        new: &RevisionObjects,
    ) -> SymbolDiff {
        let full_new = SymbolIndex::of(new);
        let names: BTreeSet<String> = full_new
            .iter()
            .chain(base_index.iter())
            .map(|symbol| symbol.name.clone())
            .collect();
        let full = SymbolDiff::between(base_index, full_new);
        let incremental = SymbolDiff::incremental(latest, new);
        let changes = |diff: &SymbolDiff| {
            diff.symbols
                .iter()
                .filter(|symbol| symbol.status != ChangeStatus::Unchanged)
                .map(|symbol| {
                    let objects: Vec<_> = symbol.definitions.iter().map(|d| &d.object).collect();
                    format!(
                        "{:?} {} {:x} {objects:?}",
                        symbol.status, symbol.mangled, symbol.fingerprint
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(changes(&incremental), changes(&full));
        assert_eq!(incremental.layout_changes, full.layout_changes);
        for name in &names {
            let described = |diff: &SymbolDiff| {
                diff.new.get(name).map(|symbol| {
                    format!(
                        "{:x} {:?} {:?}",
                        symbol.fingerprint, symbol.definitions, symbol.references
                    )
                })
            };
            assert_eq!(described(&incremental), described(&full), "{name}");
            assert_eq!(
                incremental.new.referrers_of(name),
                full.new.referrers_of(name),
                "referrers of {name}"
            );
        }
        incremental
    }

    fn statuses(diff: &SymbolDiff) -> Vec<(ChangeStatus, String)> {
        diff.symbols
            .iter()
            .filter(|symbol| symbol.status != ChangeStatus::Unchanged)
            .map(|symbol| (symbol.status, symbol.demangled.clone()))
            .collect()
    }

    #[test]
    fn objects_both_revisions_have_are_not_read() {
        let a = object("a.o", &[function("app::f"), function("app::g")]);
        let b = object("b.o", &[function("app::h")]);
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &b]));
        assert!(
            diff.symbols.is_empty(),
            "nothing compared: {:?}",
            diff.symbols
        );
        assert!(diff.is_empty());
        assert!(diff.new.get(&mangled("app::h")).is_some());
    }

    #[test]
    fn a_rewritten_object_is_compared_symbol_by_symbol() {
        let a = object("a.o", &[function("app::f")]);
        let b = object("b.o", &[function("app::h"), function("app::same")]);
        let b2 = object(
            "b2.o",
            &[function("app::h").version(1), function("app::same")],
        );
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &b2]));
        assert_eq!(statuses(&diff), [(ChangeStatus::Changed, "app::h".into())]);
        // Unchanged symbols are not listed.
        assert_eq!(diff.symbols.len(), 1);
        let definition = &diff.new.get(&mangled("app::h")).unwrap().definitions[0];
        assert_eq!(&*definition.object, Path::new("b2.o"));
    }

    #[test]
    fn an_added_object_adds_its_symbols_and_a_removed_one_removes_them() {
        let a = object("a.o", &[function("app::f")]);
        let b = object("b.o", &[function("app::gone")]);
        let c = object("c.o", &[function("app::fresh")]);
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &c]));
        assert_eq!(
            statuses(&diff),
            [
                (ChangeStatus::Added, "app::fresh".into()),
                (ChangeStatus::Removed, "app::gone".into())
            ]
        );
        assert!(diff.new.get(&mangled("app::gone")).is_none());
    }

    #[test]
    fn referrers_follow_the_rewritten_objects() {
        let leaf = function("app::leaf");
        let other = function("app::other");
        let caller = function("app::caller").referring_to(&[&leaf]);
        let a = object("a.o", &[leaf.clone(), other.clone()]);
        let b = object("b.o", std::slice::from_ref(&caller));
        // The edit makes `caller` call `other` instead of `leaf`.
        let edited = function("app::caller").version(1).referring_to(&[&other]);
        let b2 = object("b2.o", &[edited]);
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &b2]));
        assert!(
            diff.referrers_of(&leaf.name).next().is_none(),
            "referrer removed"
        );
        assert_eq!(
            diff.referrers_of(&other.name).collect::<Vec<_>>(),
            [caller.name.as_str()],
            "referrer added"
        );
        // And back: the base's referrer is there again.
        let diff = diffs(&revision(&[&a, &b2]), &revision(&[&a, &b]));
        assert_eq!(
            diff.referrers_of(&leaf.name).collect::<Vec<_>>(),
            [caller.name.as_str()]
        );
    }

    #[test]
    fn copies_in_objects_both_revisions_have_still_count() {
        // A LOCAL function defined in two objects; the edit rewrites one of them.
        let helper = function("app::helper");
        let a = object("a.o", &[helper.clone(), function("app::f")]);
        let b = object("b.o", std::slice::from_ref(&helper));
        let b2 = object("b2.o", &[helper.clone().version(7)]);
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &b2]));
        assert_eq!(
            statuses(&diff),
            [(ChangeStatus::Changed, "app::helper".into())]
        );
        let objects: Vec<_> = diff
            .new
            .get(&helper.name)
            .unwrap()
            .definitions
            .iter()
            .map(|d| d.object.clone())
            .collect();
        assert_eq!(objects, [Path::new("a.o").into(), Path::new("b2.o").into()]);
    }

    #[test]
    fn data_layout_changes_are_found_in_rewritten_objects() {
        let a = object("a.o", &[function("app::f")]);
        let b = object(
            "b.o",
            &[symbol("app::STATE", SymbolKind::Data).laid_out(8, ".bss")],
        );
        let b2 = object(
            "b2.o",
            &[symbol("app::STATE", SymbolKind::Data)
                .laid_out(24, ".bss")
                .renamed(0xfeed)],
        );
        let diff = diffs(&revision(&[&a, &b]), &revision(&[&a, &b2]));
        assert_eq!(diff.layout_changes.len(), 1);
        assert_eq!(
            (
                diff.layout_changes[0].old_size,
                diff.layout_changes[0].new_size
            ),
            (8, 24)
        );
    }

    /// A revision drawn at random: objects `o0…`, each defining some of the functions
    /// `app::f0…` (a name may be in several objects), in some version, referring to others.
    fn arbitrary_objects() -> impl Strategy<Value = Vec<StoredObject>> {
        let definition = (
            0..12usize,
            0..3u64,
            proptest::collection::vec(0..12usize, 0..3),
        );
        let object_symbols = proptest::collection::vec(definition, 0..5);
        proptest::collection::vec(object_symbols, 1..6).prop_map(|objects| {
            objects
                .into_iter()
                .enumerate()
                .map(|(index, symbols)| {
                    let mut by_name: BTreeMap<usize, IndexedSymbol> = BTreeMap::new();
                    for (name, version, references) in symbols {
                        let targets: Vec<IndexedSymbol> = references
                            .iter()
                            .filter(|&&target| target != name)
                            .map(|target| function(&format!("app::f{target}")))
                            .collect();
                        let targets: Vec<&IndexedSymbol> = targets.iter().collect();
                        by_name.insert(
                            name,
                            function(&format!("app::f{name}"))
                                .version(version)
                                .referring_to(&targets),
                        );
                    }
                    let symbols: Vec<IndexedSymbol> = by_name.into_values().collect();
                    // Contents name the file, as in the store's pool.
                    object(
                        &format!("o{index}-{:x}.o", content_hash(&symbols)),
                        &symbols,
                    )
                })
                .collect()
        })
    }

    fn content_hash(symbols: &[IndexedSymbol]) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for symbol in symbols {
            (&symbol.name, symbol.fingerprint, &symbol.references).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// `build`'s own objects, and those of `earlier` that `kept` selects (as incremental
    /// builds carry unchanged objects over).
    fn carried_over(
        build: Vec<StoredObject>,
        earlier: &[StoredObject],
        kept: &[bool],
    ) -> RevisionObjects {
        let mut objects = build;
        objects.extend(
            earlier
                .iter()
                .zip(kept)
                .filter(|(_, kept)| **kept)
                .map(|(o, _)| o.clone()),
        );
        let mut seen = HashSet::new();
        objects.retain(|object| seen.insert(object.path.clone()));
        revision(&objects.iter().collect::<Vec<_>>())
    }

    proptest! {
        #[test]
        fn equals_the_full_diff_after_each_of_several_builds(
            base in arbitrary_objects(),
            first in arbitrary_objects(),
            second in arbitrary_objects(),
            third in arbitrary_objects(),
            kept in proptest::collection::vec(any::<bool>(), 18),
            warm_up in any::<bool>(),
        ) {
            let base = revision(&base.iter().collect::<Vec<_>>());
            let first = carried_over(first, &base.objects, &kept[..6]);
            let second = carried_over(second, &first.objects, &kept[6..12]);
            let third = carried_over(third, &second.objects, &kept[12..]);
            let base_index = Arc::new(SymbolIndex::of(&base));
            let mut latest = LatestBuild::base(base.clone(), base_index.clone());
            if warm_up {
                // The first build is a warm-up: indexed in full, the anchor of the others.
                latest = LatestBuild::anchored(first.clone(), base_index.clone());
            }
            for build in [first, second, third] {
                let diff = checked(&base_index, &latest, &build);
                latest = latest.after(build, &diff);
            }
        }
    }
}
