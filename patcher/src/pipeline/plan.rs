//! What goes into a patch, decided from the diff against the running base revision.
//!
//! Patches are cumulative: each one holds everything that changed since the program started,
//! so there are never chains. The image gets the changed and added functions. Each changed
//! function that runs in the program is reached one of two ways:
//! - a `#[hotreload]` implementation (a root) has its slot rewired to the image;
//! - any other function gets a jump written over its old entry (an entry redirect), so every
//!   caller — direct calls, fn pointers, vtables, closures — reaches the new version.
//!
//! A function whose entry can't take a jump (see [`EntryPolicy`]) is reached through its
//! callers instead: every unchanged caller on the way up to a root or a redirectable function
//! is relinked too (an unchanged caller calls the old callee by address).

use crate::pipeline::check::layout::TypeLayoutChange;
use crate::pipeline::diff::{
    demangle, distinct_names, ChangeStatus, LayoutChange, SymbolChange, SymbolDiff,
};
use crate::pipeline::objects::symbols::{SymbolIndex, SymbolKind};
use hotreload_abi::events::RefusalKind;
use hotreload_abi::slot::is_slot_implementation;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::PathBuf;

/// The contents of one patch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PatchPlan {
    /// Mangled names of every function the image defines afresh (never bound to the
    /// executable's copy): changed, added, and the callers relinked on the way to a root.
    pub relinked: BTreeSet<String>,
    /// Slot implementations to rewire (a subset of `relinked`).
    pub roots: BTreeSet<String>,
    /// Functions of the running program whose entries jump to their new version (a subset
    /// of `relinked`).
    pub redirected: BTreeSet<String>,
    /// Data the edit added: it lives in the image.
    pub added_data: BTreeSet<String>,
    /// Objects of the new revision that define something in `relinked` or `added_data`.
    pub objects: BTreeSet<PathBuf>,
    /// Demangled names ([`distinct_names`]) of the functions this edit changed and added:
    /// against the diff's old revision, until [`narrow_to_edit`] compares them with the
    /// code running before the edit.
    pub changed: Vec<String>,
    pub added: Vec<String>,
    /// Demangled names of every function changed since the program started (the base).
    pub changed_since_start: Vec<String>,
    /// Every function changed or added since the base, with its fingerprint in this build:
    /// what runs once the patch is applied, for the next edit to be compared with.
    pub functions: BTreeMap<String, u64>,
    /// Changed functions neither redirected nor reached through their callers: their callers
    /// keep the old code.
    pub unreachable: Vec<String>,
    /// Things the person should know about an applied patch (`main` changed…).
    pub notes: Vec<String>,
    /// Hash of what the plan links (set by the session): equal plans make equal images.
    pub content: u64,
}

/// Why an edit can't be patched into the running program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A static or thread-local changed size, section or kind.
    DataLayout(Vec<LayoutChange>),
    /// A new `thread_local!` (demangled names).
    NewThreadLocal(Vec<String>),
    /// Nothing that changed can be reached: no entry takes a jump and no `#[hotreload]`
    /// function calls it (demangled names, and why each entry can't be redirected).
    NoSlotReached(Vec<(String, String)>),
    /// Types whose values the running program holds changed layout (checked after planning,
    /// by `layout`).
    TypeLayout(Vec<TypeLayoutChange>),
}

impl Refusal {
    /// The refusal's kind, for tools (`patch-refused`'s `kind`).
    pub fn kind(&self) -> RefusalKind {
        match self {
            Refusal::DataLayout(_) => RefusalKind::DataLayout,
            Refusal::NewThreadLocal(_) => RefusalKind::NewThreadLocal,
            Refusal::NoSlotReached(_) => RefusalKind::Unreachable,
            Refusal::TypeLayout(_) => RefusalKind::TypeLayout,
        }
    }

    /// What it is about: the statics, thread-locals or functions (demangled), or the types.
    pub fn items(&self) -> Vec<String> {
        match self {
            Refusal::DataLayout(changes) => changes.iter().map(|c| c.demangled.clone()).collect(),
            Refusal::NewThreadLocal(names) => names.clone(),
            Refusal::NoSlotReached(functions) => {
                functions.iter().map(|(name, _)| name.clone()).collect()
            }
            Refusal::TypeLayout(changes) => changes.iter().map(|c| c.type_name.clone()).collect(),
        }
    }
}

/// `` `a`, `b` `` with `separator` between the names.
fn quoted(names: &[String], separator: &str) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(separator)
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::DataLayout(changes) => write!(
                f,
                "the layout of existing data changed ({}); the running program's data can't be migrated: restart to apply this edit",
                changes
                    .iter()
                    .map(|c| format!(
                        "`{}`: {} → {} bytes, {} → {}",
                        c.demangled, c.old_size, c.new_size, c.old_section, c.new_section
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Refusal::NewThreadLocal(names) => write!(
                f,
                "the edit adds thread-locals ({}); a running program can't grow its threads' TLS blocks: restart to apply this edit",
                quoted(names, ", ")
            ),
            Refusal::NoSlotReached(functions) => write!(
                f,
                "nothing running can reach the changed code ({}) and no #[hotreload] function calls it, so nothing would run it: mark a caller #[hotreload] or restart",
                functions
                    .iter()
                    .map(|(name, why)| format!("`{name}`: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
            Refusal::TypeLayout(changes) => write!(
                f,
                "{}; the running program holds values of the old layout: restart to apply this edit",
                changes
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Which functions of the running program may get a jump over their entry.
pub trait EntryPolicy {
    /// `Ok` if the entry of `mangled` can take a jump to a new version; otherwise why not.
    fn redirectable(&self, mangled: &str) -> Result<(), String>;
    /// True for a function that, once running, never returns (the program's `main`): a
    /// redirect reaches only its next call.
    fn runs_forever(&self, mangled: &str) -> bool;
}

/// Plans a patch from the diff of the base revision against the new one, redirecting the
/// entries `entries` allows. `Ok(None)` when
/// the edit changed no function (a comment, formatting).
pub fn plan(diff: &SymbolDiff, entries: &dyn EntryPolicy) -> Result<Option<PatchPlan>, Refusal> {
    if !diff.layout_changes.is_empty() {
        return Err(Refusal::DataLayout(diff.layout_changes.clone()));
    }
    let new_thread_locals: Vec<String> = diff
        .with_status(ChangeStatus::Added)
        .filter(|s| s.kind == SymbolKind::ThreadLocal)
        .map(|s| s.demangled.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if !new_thread_locals.is_empty() {
        return Err(Refusal::NewThreadLocal(new_thread_locals));
    }
    let changed: Vec<_> = diff
        .with_status(ChangeStatus::Changed)
        .filter(|s| s.kind == SymbolKind::Function)
        .collect();
    let added: Vec<_> = diff.with_status(ChangeStatus::Added).collect();
    if changed.is_empty() && added.iter().all(|s| s.kind != SymbolKind::Function) {
        return Ok(None);
    }

    let mut plan = PatchPlan::default();
    let mut unreachable = Vec::new();
    let is_root = |mangled: &str| is_slot_implementation(&demangle(mangled));
    let is_reached = |mangled: &str| is_root(mangled) || entries.redirectable(mangled).is_ok();
    for function in &changed {
        plan.relinked.insert(function.mangled.clone());
        if is_root(&function.mangled) {
            // Its slot is rewired: callers keep calling through the slot, nothing to relink.
            plan.roots.insert(function.mangled.clone());
            continue;
        }
        let why_not = match entries.redirectable(&function.mangled) {
            Ok(()) => {
                plan.redirected.insert(function.mangled.clone());
                if entries.runs_forever(&function.mangled) {
                    plan.notes.push(format!(
                        "`{}` changed: it is running and never returns, so the change takes effect at the next start",
                        function.demangled
                    ));
                }
                continue;
            }
            Err(why_not) => why_not,
        };
        let mut reached = false;
        for caller in diff.referrer_closure([function.mangled.as_str()], is_reached) {
            if is_root(&caller) {
                reached = true;
                plan.roots.insert(caller.clone());
            } else if is_reached(&caller) {
                reached = true;
                plan.redirected.insert(caller.clone());
            }
            plan.relinked.insert(caller);
        }
        if !reached {
            unreachable.push((function.demangled.clone(), why_not));
        }
    }
    // A slot implementation renamed by the edit (the legacy symbol hash covers the fields of
    // the types its signature names) is still the running slot: a root, so the layout check
    // sees its arguments.
    let removed_roots: BTreeSet<&str> = diff
        .with_status(ChangeStatus::Removed)
        .filter(|s| s.kind == SymbolKind::Function && is_slot_implementation(&s.demangled))
        .map(|s| s.demangled.as_str())
        .collect();
    plan.roots.extend(
        added
            .iter()
            .filter(|s| {
                s.kind == SymbolKind::Function && removed_roots.contains(s.demangled.as_str())
            })
            .map(|s| s.mangled.clone()),
    );
    // A plain function recompiled under a new symbol (the legacy hash covers its signature,
    // and changes when its first closure appears): its callers changed with it and now call
    // the new one, but its old entry is not redirected (the signature may differ), so a
    // pointer to it taken before the patch keeps calling the old code. Say so.
    let removed_functions: BTreeSet<&str> = diff
        .with_status(ChangeStatus::Removed)
        .filter(|s| s.kind == SymbolKind::Function && !is_slot_implementation(&s.demangled))
        .map(|s| s.demangled.as_str())
        .collect();
    plan.notes.extend(
        added
            .iter()
            .filter(|s| s.kind == SymbolKind::Function && removed_functions.contains(s.demangled.as_str()))
            .map(|s| format!(
                "`{}` has a new symbol (its signature or its closures changed): its callers now call the new version, but a pointer to it taken before this patch still runs the old one",
                s.demangled
            )),
    );
    if plan.roots.is_empty() && plan.redirected.is_empty() && !changed.is_empty() {
        return Err(Refusal::NoSlotReached(unreachable));
    }
    for symbol in &added {
        match symbol.kind {
            SymbolKind::Function => plan.relinked.insert(symbol.mangled.clone()),
            _ => plan.added_data.insert(symbol.mangled.clone()),
        };
    }
    for name in plan.relinked.iter().chain(&plan.added_data) {
        if let Some(symbol) = diff.new.get(name) {
            plan.objects
                .extend(symbol.definitions.iter().map(|d| d.object.to_path_buf()));
        }
    }
    let added_functions: Vec<&SymbolChange> = added
        .iter()
        .copied()
        .filter(|s| s.kind == SymbolKind::Function)
        .collect();
    plan.changed = distinct_names(changed.iter().map(|s| s.mangled.as_str()));
    plan.added = distinct_names(added_functions.iter().map(|s| s.mangled.as_str()));
    plan.changed_since_start = plan.changed.clone();
    plan.functions = changed
        .iter()
        .chain(&added_functions)
        .map(|s| (s.mangled.clone(), s.fingerprint))
        .collect();
    plan.unreachable = unreachable.into_iter().map(|(name, _)| name).collect();
    Ok(Some(plan))
}

/// Narrows `plan`'s `changed` and `added` to what this edit changed relative to the code
/// running before it: `before` is the [`PatchPlan::functions`] of the patch running now
/// (empty at the base), `base` the base's index. A function an earlier patch changed and
/// this edit brought back to the base's code changed too.
pub fn narrow_to_edit(plan: &mut PatchPlan, before: &BTreeMap<String, u64>, base: &SymbolIndex) {
    let running = |name: &str| {
        before
            .get(name)
            .copied()
            .or_else(|| base.get(name).map(|symbol| symbol.fingerprint))
    };
    let mut changed = Vec::new();
    let mut added = Vec::new();
    for (name, &fingerprint) in &plan.functions {
        match running(name) {
            None => added.push(name.as_str()),
            Some(previous) if previous != fingerprint => changed.push(name.as_str()),
            Some(_) => {}
        }
    }
    changed.extend(
        before
            .keys()
            .filter(|name| !plan.functions.contains_key(*name) && base.get(name).is_some())
            .map(String::as_str),
    );
    changed.sort_unstable();
    plan.changed = distinct_names(changed);
    plan.added = distinct_names(added);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::objects::symbols::synthetic::{function, index, mangled, symbol};
    use crate::pipeline::objects::symbols::IndexedSymbol;

    /// Every entry takes a jump except those listed (by demangled path, with why not).
    #[derive(Default)]
    struct Entries {
        refused: Vec<(&'static str, &'static str)>,
        running_forever: Option<&'static str>,
    }

    impl Entries {
        fn refusing(paths: &[&'static str]) -> Entries {
            Entries {
                refused: paths.iter().map(|path| (*path, "too short")).collect(),
                running_forever: None,
            }
        }
    }

    impl EntryPolicy for Entries {
        fn redirectable(&self, mangled: &str) -> Result<(), String> {
            let path = demangle(mangled);
            match self.refused.iter().find(|(refused, _)| *refused == path) {
                Some((_, why)) => Err(why.to_string()),
                None => Ok(()),
            }
        }

        fn runs_forever(&self, mangled: &str) -> bool {
            self.running_forever == Some(demangle(mangled).as_str())
        }
    }

    fn plan_between(
        old: &[IndexedSymbol],
        new: &[IndexedSymbol],
        entries: &Entries,
    ) -> Result<Option<PatchPlan>, Refusal> {
        plan(&SymbolDiff::between(&index(old), index(new)), entries)
    }

    /// Demangled names, sorted.
    fn paths(names: &BTreeSet<String>) -> Vec<String> {
        let mut paths: Vec<_> = names.iter().map(|name| demangle(name)).collect();
        paths.sort();
        paths
    }

    fn objects(paths: &[&str]) -> BTreeSet<PathBuf> {
        paths
            .iter()
            .map(|path| format!("{path}.o").into())
            .collect()
    }

    const ROOT: &str = "app::frame::__hotreload_impl";

    /// `app::frame::__hotreload_impl → app::middle → app::leaf`, and `app::top → app::frame…`,
    /// with `app::leaf` at `leaf_version`.
    fn frame_calling_leaf(leaf_version: u64) -> Vec<IndexedSymbol> {
        let leaf = function("app::leaf").version(leaf_version);
        let middle = function("app::middle").referring_to(&[&leaf]);
        let root = function(ROOT).referring_to(&[&middle]);
        let top = function("app::top").referring_to(&[&root]);
        vec![leaf, middle, root, top]
    }

    #[test]
    fn a_changed_redirectable_function_is_redirected_and_no_caller_relinked() {
        let plan = plan_between(
            &frame_calling_leaf(0),
            &frame_calling_leaf(1),
            &Entries::default(),
        )
        .unwrap()
        .unwrap();
        assert_eq!(paths(&plan.relinked), ["app::leaf"]);
        assert_eq!(paths(&plan.redirected), ["app::leaf"]);
        assert!(plan.roots.is_empty());
        assert_eq!(plan.changed, ["app::leaf"]);
        assert!(plan.unreachable.is_empty() && plan.notes.is_empty());
        assert_eq!(plan.objects, objects(&["app::leaf"]));
    }

    #[test]
    fn a_changed_slot_implementation_is_a_root() {
        let old = frame_calling_leaf(0);
        let mut new = old.clone();
        new[2] = new[2].clone().version(1);
        let plan = plan_between(&old, &new, &Entries::refusing(&[ROOT]))
            .unwrap()
            .unwrap();
        assert_eq!(paths(&plan.roots), [ROOT]);
        assert_eq!(paths(&plan.relinked), [ROOT]);
        assert!(plan.redirected.is_empty());
    }

    #[test]
    fn callers_of_an_unredirectable_function_are_relinked_up_to_the_nearest_root() {
        let entries = Entries::refusing(&["app::leaf", "app::middle"]);
        let plan = plan_between(&frame_calling_leaf(0), &frame_calling_leaf(1), &entries)
            .unwrap()
            .unwrap();
        // `app::top` calls the root through its slot: not relinked.
        assert_eq!(paths(&plan.relinked), [ROOT, "app::leaf", "app::middle"]);
        assert_eq!(paths(&plan.roots), [ROOT]);
        assert!(plan.redirected.is_empty());
        assert_eq!(plan.objects, objects(&[ROOT, "app::leaf", "app::middle"]));
    }

    #[test]
    fn callers_are_relinked_up_to_a_redirectable_caller() {
        let entries = Entries::refusing(&["app::leaf"]);
        let plan = plan_between(&frame_calling_leaf(0), &frame_calling_leaf(1), &entries)
            .unwrap()
            .unwrap();
        // `app::middle` is unchanged but takes a jump to its relinked copy; the walk stops.
        assert_eq!(paths(&plan.relinked), ["app::leaf", "app::middle"]);
        assert_eq!(paths(&plan.redirected), ["app::middle"]);
        assert!(plan.roots.is_empty());
    }

    #[test]
    fn an_unredirectable_change_no_root_reaches_is_refused_with_why() {
        let old = [function("app::leaf"), function("app::caller")];
        let new = [
            function("app::leaf").version(1),
            function("app::caller").referring_to(&[&old[0]]),
        ];
        let entries = Entries::refusing(&["app::leaf", "app::caller"]);
        let refusal = plan_between(&old, &new, &entries).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::NoSlotReached(vec![("app::leaf".into(), "too short".into())])
        );
        assert_eq!(refusal.kind(), RefusalKind::Unreachable);
        assert_eq!(refusal.items(), ["app::leaf"]);
        assert!(refusal.to_string().contains("`app::leaf`: too short"));
    }

    #[test]
    fn an_unreachable_change_beside_a_reachable_one_is_listed() {
        let old = [function("app::stuck"), function("app::helper")];
        let new = [
            function("app::stuck").version(1),
            function("app::helper").version(1),
        ];
        let plan = plan_between(&old, &new, &Entries::refusing(&["app::stuck"]))
            .unwrap()
            .unwrap();
        assert_eq!(plan.unreachable, ["app::stuck"]);
        assert_eq!(paths(&plan.redirected), ["app::helper"]);
        assert_eq!(paths(&plan.relinked), ["app::helper", "app::stuck"]);
    }

    #[test]
    fn a_function_that_runs_forever_gets_a_note() {
        let old = [function("app::main")];
        let new = [function("app::main").version(1)];
        let entries = Entries {
            running_forever: Some("app::main"),
            ..Entries::default()
        };
        let plan = plan_between(&old, &new, &entries).unwrap().unwrap();
        assert_eq!(paths(&plan.redirected), ["app::main"]);
        assert_eq!(plan.notes.len(), 1);
        assert!(
            plan.notes[0].contains("`app::main`") && plan.notes[0].contains("next start"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn a_data_layout_change_is_refused() {
        let old = [
            symbol("app::STATE", SymbolKind::Data).laid_out(8, ".bss"),
            function("app::f"),
        ];
        let new = [
            symbol("app::STATE", SymbolKind::Data).laid_out(16, ".bss"),
            function("app::f").version(1),
        ];
        let refusal = plan_between(&old, &new, &Entries::default()).unwrap_err();
        assert!(
            matches!(&refusal, Refusal::DataLayout(changes) if changes.len() == 1),
            "{refusal:?}"
        );
        assert_eq!(refusal.kind(), RefusalKind::DataLayout);
        assert_eq!(refusal.items(), ["app::STATE"]);
    }

    #[test]
    fn an_added_thread_local_is_refused() {
        let old = [function("app::f")];
        let new = [
            function("app::f").version(1),
            symbol("app::COUNTER", SymbolKind::ThreadLocal),
        ];
        let refusal = plan_between(&old, &new, &Entries::default()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::NewThreadLocal(vec!["app::COUNTER".into()])
        );
        assert_eq!(refusal.kind(), RefusalKind::NewThreadLocal);
    }

    #[test]
    fn no_plan_when_no_function_changed() {
        let old = [function("app::f")];
        assert_eq!(plan_between(&old, &old, &Entries::default()), Ok(None));
        let with_data = [function("app::f"), symbol("app::TABLE", SymbolKind::Data)];
        assert_eq!(
            plan_between(&old, &with_data, &Entries::default()),
            Ok(None)
        );
    }

    #[test]
    fn objects_hold_what_is_relinked_and_added() {
        let old = [function("app::helper"), function("app::untouched")];
        let table = symbol("app::TABLE", SymbolKind::Data);
        let fresh = function("app::fresh").referring_to(&[&table]);
        let new = [
            function("app::helper").version(1).referring_to(&[&fresh]),
            function("app::untouched"),
            fresh,
            table.clone(),
        ];
        let plan = plan_between(&old, &new, &Entries::default())
            .unwrap()
            .unwrap();
        assert_eq!(paths(&plan.relinked), ["app::fresh", "app::helper"]);
        assert_eq!(plan.added_data, BTreeSet::from([table.name.clone()]));
        assert_eq!(plan.added, ["app::fresh"]);
        assert_eq!(
            plan.objects,
            objects(&["app::fresh", "app::helper", "app::TABLE"])
        );
    }

    #[test]
    fn a_renamed_slot_implementation_stays_a_root() {
        let old = [function(ROOT)];
        let new = [function(ROOT).renamed(0xbeef).version(1)];
        let plan = plan_between(&old, &new, &Entries::default())
            .unwrap()
            .unwrap();
        assert_eq!(plan.roots, BTreeSet::from([new[0].name.clone()]));
        assert_ne!(new[0].name, mangled(ROOT));
        assert!(plan.relinked.contains(&new[0].name));
        assert!(plan.notes.is_empty(), "{:?}", plan.notes);
    }

    #[test]
    fn a_renamed_plain_function_gets_a_note_about_old_pointers() {
        let old = [function("app::helper"), function("app::caller")];
        let renamed = function("app::helper").renamed(0xbeef);
        let new = [
            renamed.clone(),
            function("app::caller").version(1).referring_to(&[&renamed]),
        ];
        let plan = plan_between(&old, &new, &Entries::default())
            .unwrap()
            .unwrap();
        assert_eq!(plan.added, ["app::helper"]);
        assert_eq!(paths(&plan.redirected), ["app::caller"]);
        assert_eq!(plan.notes.len(), 1, "{:?}", plan.notes);
        assert!(
            plan.notes[0].contains("`app::helper` has a new symbol"),
            "{:?}",
            plan.notes
        );
    }

    #[test]
    fn an_edit_names_what_it_changed_since_the_code_running_before_it() {
        let base = [function("app::f"), function("app::g"), function("app::h")];
        let edit = |new: &[IndexedSymbol], before: &BTreeMap<String, u64>| {
            let mut plan = plan_between(&base, new, &Entries::default())
                .unwrap()
                .unwrap();
            narrow_to_edit(&mut plan, before, &index(&base));
            plan
        };
        let f1 = function("app::f").version(1);
        let first = edit(
            &[f1.clone(), function("app::g"), function("app::fresh")],
            &BTreeMap::new(),
        );
        assert_eq!(
            (first.changed.as_slice(), first.added.as_slice()),
            (&["app::f".to_string()][..], &["app::fresh".to_string()][..])
        );

        // f as the first patch left it, g edited now: only g is this edit's.
        let second = edit(
            &[f1, function("app::g").version(2), function("app::fresh")],
            &first.functions,
        );
        assert_eq!(second.changed, ["app::g"]);
        assert!(second.added.is_empty(), "{:?}", second.added);
        assert_eq!(second.changed_since_start, ["app::f", "app::g"]);

        // f back to the base's code: a change of this edit too.
        let third = edit(
            &[
                function("app::f"),
                function("app::g").version(2),
                function("app::fresh"),
            ],
            &second.functions,
        );
        assert_eq!(third.changed, ["app::f"]);
        assert_eq!(third.changed_since_start, ["app::g"]);
    }
}
