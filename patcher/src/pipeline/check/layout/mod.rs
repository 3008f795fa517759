//! Refuses patches that would run new code on data laid out the old way.
//!
//! The running program holds values of the crate's types in statics, thread-locals, on the
//! heap and on the stacks of its callers. New code reads them with the new layout. Where old
//! data meets new code:
//! - the parameters and return values of the slot implementations being rewired and of the
//!   functions whose entries are redirected (old callers
//!   pass values in and take the result);
//! - the statics and thread-locals the relinked functions refer to, directly or through the
//!   unchanged (old) code they call;
//!
//! and from there every type those values lead to: fields and enum variants by value, and
//! pointees of references, raw pointers, `Box`, and the generic arguments of `Vec`,
//! `Option`, `HashMap`… (heap data the old code made). Each such type of the crate is
//! compared between the base and the new build's DWARF: size, alignment, fields (name,
//! offset, type), enum discriminant placement and variants. A type used only inside the new
//! code (a local) is never reached, so changing it is fine.

mod compare;
mod generated;
mod source;

use crate::pipeline::diff::{demangle, EditedIndex};
use crate::pipeline::objects::cache::{ObjectCache, RevisionObjects};
use crate::pipeline::objects::dwarf::{
    LocalCrateNames, ObjectTypes, SourceFile, TypeInfo, TypeUse,
};
use crate::pipeline::objects::symbols::SymbolKind;
use crate::pipeline::objects::type_layout::Layout;
use crate::pipeline::plan::{PatchPlan, Refusal};
use compare::differences;
use generated::{generated_differences, GeneratedType, States};
use hotreload_abi::slot::{is_slot_implementation, IMPLEMENTATION_SUFFIX};
use linker_shim::{Result, Revision};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// One type whose layout changed although the running program holds values of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeLayoutChange {
    /// As DWARF spells it: `demo::physics::Ball`, `demo::Wrapper<u32>`.
    pub type_name: String,
    /// `demo/src/physics.rs:12` (relative to the directory rustc ran in), when known.
    pub declared_at: Option<String>,
    /// `size 16 → 24`, `field `y` moved 4 → 8`, `variant `Dead` discriminant 2 → 3`…
    pub changes: Vec<String>,
    /// Where old values of it come from: `argument `ball` of `demo::physics::step``, or
    /// `static `demo::WORLD`` then the types in between.
    pub reached_from: String,
}

impl fmt::Display for TypeLayoutChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let generated = GeneratedType::parse(&self.type_name);
        match &generated {
            Some(generated) => write!(f, "{}", generated.shown())?,
            None => write!(f, "`{}`", self.type_name)?,
        }
        if let Some(place) = &self.declared_at {
            write!(f, " ({place})")?;
        }
        match &generated {
            Some(generated) => write!(
                f,
                ": {}; {} (reached as {})",
                self.changes.join(", "),
                generated.old_values(),
                self.reached_from
            ),
            None => write!(
                f,
                " changed layout: {} (old values reach new code as {})",
                self.changes.join(", "),
                self.reached_from
            ),
        }
    }
}

/// What a revision's DWARF says about the crate's types, per object file.
#[derive(Debug, Default)]
pub struct TypeLayouts {
    crates: LocalCrateNames,
    objects: Vec<Arc<ObjectTypes>>,
    /// The demangled paths of its functions, made when first asked (the base's, once per
    /// session: a demangle per function).
    function_paths: OnceLock<HashSet<String>>,
}

impl TypeLayouts {
    /// Reads every object of `revision` (for a one-off check; a session reads through its
    /// [`ObjectCache`]).
    pub fn load(revision: &Revision) -> Result<TypeLayouts> {
        let objects = ObjectCache::for_revision(revision).read(revision, revision)?;
        Ok(TypeLayouts::of(&objects))
    }

    /// The types of a revision's objects, as the object cache read them.
    pub fn of(objects: &RevisionObjects) -> TypeLayouts {
        TypeLayouts {
            crates: objects.crates.clone(),
            objects: objects
                .objects
                .iter()
                .map(|object| Arc::clone(&object.parsed.types))
                .collect(),
            function_paths: OnceLock::new(),
        }
    }

    /// False for a build without debug information: nothing can be checked.
    pub fn is_described(&self) -> bool {
        self.objects.iter().any(|object| object.described)
    }

    /// The distinct definitions of `name` (one, unless object files disagree).
    fn definitions(&self, name: &str) -> Vec<&TypeInfo> {
        let mut found: Vec<&TypeInfo> = Vec::new();
        for info in self
            .objects
            .iter()
            .filter_map(|object| object.types.get(name))
        {
            if !found.iter().any(|known| known.layout == info.layout) {
                found.push(info);
            }
        }
        found
    }

    fn function(&self, linkage_name: &str) -> Option<&[TypeUse]> {
        self.objects
            .iter()
            .find_map(|object| object.functions.get(linkage_name))
            .map(|uses| &**uses)
    }

    fn has_function_at(&self, demangled: &str) -> bool {
        self.function_paths
            .get_or_init(|| {
                self.objects
                    .iter()
                    .flat_map(|object| object.functions.keys())
                    .map(|name| demangle(name))
                    .collect()
            })
            .contains(demangled)
    }

    fn static_type(&self, linkage_name: &str) -> Option<&TypeUse> {
        self.objects
            .iter()
            .find_map(|object| object.statics.get(linkage_name))
    }

    fn namespace_file(&self, namespace: &str) -> Option<&SourceFile> {
        self.objects
            .iter()
            .find_map(|object| object.namespace_files.get(namespace))
    }

    /// `demo/src/physics.rs:12`, or just the file when the item can't be found in it. A
    /// future's line is the one DWARF gives its `Unresumed` state: its async fn's or block's.
    fn declared_at(&self, info: &TypeInfo, type_name: &str) -> Option<String> {
        if let Some(lines) = &info.state_lines {
            if let (Some(file), Some(line)) = (&lines.file, lines.lines.get("Unresumed")) {
                return Some(format!("{}:{line}", file.shown));
            }
        }
        let file = self.namespace_file(&info.namespace)?;
        let line = std::fs::read_to_string(&file.path)
            .ok()
            .and_then(|text| source::declaration_line(&text, type_name));
        Some(match line {
            Some(line) => format!("{}:{line}", file.shown),
            None => file.shown.clone(),
        })
    }
}

/// Refuses `plan` when a type whose values the running program holds changed layout between
/// the base and the new build's `objects`.
pub fn check_layouts(
    base: &TypeLayouts,
    objects: &RevisionObjects,
    index: &EditedIndex,
    plan: &PatchPlan,
) -> std::result::Result<(), Refusal> {
    let changes = layout_refusals(base, &TypeLayouts::of(objects), index, plan);
    if changes.is_empty() {
        Ok(())
    } else {
        Err(Refusal::TypeLayout(changes))
    }
}

/// The types whose layout changed between `base` (the running build) and `new` although the
/// patch `plan` would hand values of the old layout to new code. Empty when the patch is safe,
/// and when the base has no debug information to tell (see the README).
pub fn layout_refusals(
    base: &TypeLayouts,
    new: &TypeLayouts,
    new_index: &EditedIndex,
    plan: &PatchPlan,
) -> Vec<TypeLayoutChange> {
    if !base.is_described() {
        return Vec::new();
    }
    let entries = entry_points(base, new, new_index, plan);
    changed_types(base, new, &entries)
}

/// A value that comes from old data: what it is, and the types it leads to.
struct EntryPoint<'a> {
    origin: String,
    reaches: &'a BTreeSet<String>,
}

fn entry_points<'a>(
    base: &'a TypeLayouts,
    new: &'a TypeLayouts,
    new_index: &EditedIndex,
    plan: &PatchPlan,
) -> Vec<EntryPoint<'a>> {
    let mut entries = Vec::new();
    let rewired = plan
        .relinked
        .iter()
        .filter(|name| is_slot_implementation(&demangle(name)));
    for function in rewired.chain(&plan.redirected) {
        // Nothing to compare unless the new version takes or returns the crate's types.
        let Some(uses) = new.function(function) else {
            continue;
        };
        let demangled = demangle(function);
        // Old callers reach it if the running build has it, by name or, for a slot, at the
        // same path (a slot's symbol may be new: the legacy symbol hash covers the fields of
        // the types it takes).
        if base.function(function).is_none() && !base.has_function_at(&demangled) {
            continue;
        }
        let function = demangled
            .strip_suffix(IMPLEMENTATION_SUFFIX)
            .unwrap_or(&demangled);
        entries.extend(uses.iter().map(|type_use| EntryPoint {
            origin: format!("{} of `{function}`", type_use.role),
            reaches: &type_use.reaches,
        }));
    }
    for (name, kind) in data_reached(new_index, plan) {
        if let Some(type_use) = new.static_type(name) {
            let kind = match kind {
                SymbolKind::ThreadLocal => "thread-local",
                _ => "static",
            };
            entries.push(EntryPoint {
                origin: format!("{kind} `{}`", demangle(name)),
                reaches: &type_use.reaches,
            });
        }
    }
    entries
}

/// The existing statics and thread-locals the relinked functions refer to, directly or
/// through the running build's code they call (which may hand out pointers to its data).
fn data_reached<'a>(index: &'a EditedIndex, plan: &PatchPlan) -> Vec<(&'a str, SymbolKind)> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let mut queue: VecDeque<&str> = plan
        .relinked
        .iter()
        .filter_map(|name| Some(index.get(name)?.name.as_str()))
        .collect();
    let mut data = Vec::new();
    while let Some(name) = queue.pop_front() {
        let Some(symbol) = index.get(name) else {
            continue;
        };
        for target in &symbol.references {
            let Some(target) = index.get(target) else {
                continue;
            };
            if !seen.insert(&target.name) {
                continue;
            }
            if target.kind != SymbolKind::Function && !plan.added_data.contains(&target.name) {
                data.push((target.name.as_str(), target.kind));
            }
            queue.push_back(&target.name);
        }
    }
    data
}

/// Walks from the entry points through every type they lead to, comparing each of the
/// crate's types between the two builds.
fn changed_types(
    base: &TypeLayouts,
    new: &TypeLayouts,
    entries: &[EntryPoint<'_>],
) -> Vec<TypeLayoutChange> {
    // For each type reached: the entry point and the type it was reached through.
    let mut reached: HashMap<&str, (usize, Option<&str>)> = HashMap::new();
    let mut queue = VecDeque::new();
    for (index, entry) in entries.iter().enumerate() {
        for name in entry.reaches {
            if !reached.contains_key(name.as_str()) {
                reached.insert(name, (index, None));
                queue.push_back(name.as_str());
            }
        }
    }
    let mut changes = Vec::new();
    while let Some(name) = queue.pop_front() {
        let old = base.definitions(name);
        let current = new.definitions(name);
        if base.crates.own(name) && !old.is_empty() && !current.is_empty() {
            let found = definition_differences(name, &old, &current, |held| {
                let changed =
                    base.definitions(held).first()?.layout != new.definitions(held).first()?.layout;
                changed.then(|| Some(GeneratedType::parse(held)?.shown()))?
            });
            if !found.is_empty() {
                changes.push(TypeLayoutChange {
                    type_name: name.to_owned(),
                    declared_at: new.declared_at(current[0], name),
                    changes: found,
                    reached_from: reached_from(name, &reached, entries),
                });
            }
        }
        let (entry, _) = reached[name];
        for next in old.iter().chain(&current).flat_map(|info| &info.reaches) {
            if !reached.contains_key(next.as_str()) {
                reached.insert(next, (entry, Some(name)));
                queue.push_back(next);
            }
        }
    }
    changes
}

/// How the definitions of one type differ between two builds. A type defined differently by
/// two objects of one build can't be compared precisely: any difference counts. A generated
/// type (a future, a closure) is worded by what the user wrote; `changed_future` names a
/// generated type it holds whose own layout changed.
fn definition_differences(
    name: &str,
    old: &[&TypeInfo],
    new: &[&TypeInfo],
    changed_future: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    if let ([old], [new]) = (old, new) {
        if GeneratedType::parse(name).is_some() {
            return generated_differences(&States::of(old), &States::of(new), changed_future);
        }
    }
    let layouts = |infos: &[&TypeInfo]| -> Vec<Layout> {
        infos.iter().map(|info| info.layout.clone()).collect()
    };
    let (old, new) = (layouts(old), layouts(new));
    match (old.as_slice(), new.as_slice()) {
        ([old], [new]) => differences(old, new),
        _ if old.len() == new.len() && old.iter().all(|layout| new.contains(layout)) => Vec::new(),
        _ => vec![format!(
            "its object files describe it in {} different ways before the edit and {} after",
            old.len(),
            new.len()
        )],
    }
}

/// `argument `world` of `demo::frame`, through `demo::World``.
fn reached_from(
    name: &str,
    reached: &HashMap<&str, (usize, Option<&str>)>,
    entries: &[EntryPoint<'_>],
) -> String {
    let (entry, mut via) = reached[name];
    let mut path = Vec::new();
    while let Some(type_name) = via {
        path.push(format!("`{type_name}`"));
        via = reached[type_name].1;
    }
    path.reverse();
    let origin = &entries[entry].origin;
    if path.is_empty() {
        origin.clone()
    } else {
        format!("{origin}, through {}", path.join(" → "))
    }
}
