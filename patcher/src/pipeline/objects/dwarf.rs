//! What one object file's DWARF says about the local crates' types, the parameters of its
//! functions and the types of its statics.
//!
//! rustc writes one compilation unit per codegen unit, and each unit describes in full every
//! type it uses, so an object is read on its own. The debug sections of a relocatable object
//! hold zeros where offsets into `.debug_str`, `.debug_abbrev` or `.debug_line` belong: the
//! relocations are applied while reading.

use super::symbols::canonical_name;
use super::type_layout::{Discriminant, Field, Layout, Shape, Variant};
use gimli::constants::*;
use gimli::{
    AttributeValue, DwTag, EndianSlice, Reader as _, RelocateReader, RunTimeEndian, SectionId,
};
use linker_shim::{Context, Result};
use object::read::RelocationMap;
use object::{Object, ObjectSection, RelocationKind};
use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

type UnitOffset = gimli::UnitOffset<usize>;
type Reader<'a> = RelocateReader<EndianSlice<'a, RunTimeEndian>, Relocations<'a>>;
type Dwarf<'a> = gimli::Dwarf<Reader<'a>>;
type Unit<'a> = gimli::Unit<Reader<'a>>;

/// Applies a section's relocations to the offsets and addresses gimli reads.
#[derive(Debug, Clone, Copy)]
struct Relocations<'a>(&'a RelocationMap);

impl gimli::read::Relocate for Relocations<'_> {
    fn relocate_address(&self, offset: usize, value: u64) -> gimli::Result<u64> {
        Ok(self.0.relocate(offset as u64, value))
    }

    fn relocate_offset(&self, offset: usize, value: usize) -> gimli::Result<usize> {
        usize::try_from(self.0.relocate(offset as u64, value as u64))
            .map_err(|_| gimli::Error::OffsetOutOfBounds)
    }
}

/// A named type of the crate (or one whose name mentions it, such as
/// `core::option::Option<demo::Ball>`): its layout and the crate's types it leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeInfo {
    pub layout: Layout,
    /// Types one step away: fields, variant fields, generic arguments, and what pointers
    /// among them point to.
    pub reaches: BTreeSet<String>,
    /// The namespace the type is declared in (`demo::physics`).
    pub namespace: String,
    /// For a compiler-generated future (an async fn's or block's state machine), where its
    /// states are in the source; `None` for the types users write, which DWARF gives no line.
    pub state_lines: Option<StateLines>,
}

/// The source lines rustc gives the states of a future's state machine (one enum variant
/// per state): `Unresumed` is the async fn's or block's own line, `SuspendN` the line of its
/// N-th `.await`. Kept apart from the [`Layout`]: an edit above moves lines, not data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct StateLines {
    pub file: Option<SourceFile>,
    /// State (variant) name → line.
    pub lines: HashMap<String, u64>,
}

/// A value old code hands to new code: a parameter or return value of a slot
/// implementation, or a static.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeUse {
    /// `argument `ball``, `return value`; empty for a static.
    pub role: String,
    pub reaches: BTreeSet<String>,
}

/// A source file as DWARF names it: the path to read, and the path to show (relative to the
/// directory rustc ran in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SourceFile {
    pub path: PathBuf,
    pub shown: String,
}

/// The parts of one object's DWARF the layout check needs.
#[derive(Debug, Default)]
pub(crate) struct ObjectTypes {
    /// Only types whose names mention the crate: every other type comes from a crate that was
    /// not recompiled, so it is the same in both builds and holds none of the crate's types.
    /// Shared (see [`TypeInterner`]): most types are described by many of a build's objects,
    /// and by every build of the session.
    pub types: HashMap<Arc<str>, Arc<TypeInfo>>,
    /// Parameters and return value of each function, by linkage name; only those that reach
    /// a type of the crate (old callers hand such values to a redirected or rewired function).
    pub functions: HashMap<Arc<str>, Arc<[TypeUse]>>,
    /// Statics and thread-locals whose type reaches a type of the crate, by linkage name.
    pub statics: HashMap<String, TypeUse>,
    /// The file holding the functions and statics of each namespace. rustc gives types no
    /// declaration file, but a type's module is the module of its neighbours.
    pub namespace_files: HashMap<String, SourceFile>,
    /// Whether the object had debug information for any unit.
    pub described: bool,
}

/// One copy of each distinct type description and function signature seen, so that the
/// objects of a build, and the builds of a session, share them instead of each holding its own.
#[derive(Debug, Default)]
pub(crate) struct TypeInterner {
    types: HashMap<Arc<str>, Vec<Arc<TypeInfo>>>,
    functions: HashMap<Arc<str>, Vec<Arc<[TypeUse]>>>,
}

impl TypeInterner {
    /// `types` with every name, type and signature already seen replaced by its first copy.
    pub(crate) fn intern(&mut self, types: ObjectTypes) -> ObjectTypes {
        ObjectTypes {
            types: types
                .types
                .into_iter()
                .map(|(name, info)| shared(&mut self.types, name, info))
                .collect(),
            functions: types
                .functions
                .into_iter()
                .map(|(name, uses)| shared(&mut self.functions, name, uses))
                .collect(),
            ..types
        }
    }
}

/// `name` and `value` as first seen (an equal value under the same name), remembered if new.
fn shared<T: PartialEq + ?Sized>(
    seen: &mut HashMap<Arc<str>, Vec<Arc<T>>>,
    name: Arc<str>,
    value: Arc<T>,
) -> (Arc<str>, Arc<T>) {
    let (name, copies) = match seen.get_key_value(&name) {
        Some((known, _)) => {
            let known = Arc::clone(known);
            let copies = seen.get_mut(&known).expect("just found");
            (known, copies)
        }
        None => (Arc::clone(&name), seen.entry(name).or_default()),
    };
    match copies.iter().find(|copy| ***copy == *value) {
        Some(copy) => (name, Arc::clone(copy)),
        None => {
            copies.push(Arc::clone(&value));
            (name, value)
        }
    }
}

/// The local crates of a build (the binary crate and the libraries compiled with it): the
/// types whose layout can change with an edit are theirs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalCrateNames(Vec<String>);

impl LocalCrateNames {
    pub fn new(names: impl IntoIterator<Item = String>) -> LocalCrateNames {
        let mut names: Vec<String> = names.into_iter().collect();
        names.sort();
        names.dedup();
        LocalCrateNames(names)
    }

    /// True when `name` mentions a path of one of the crates.
    pub(crate) fn mentioned_in(&self, name: &str) -> bool {
        self.0
            .iter()
            .any(|crate_name| mentions_crate(name, crate_name))
    }

    /// True when the path `name` starts at one of the crates (`game::physics::Ball`).
    pub(crate) fn own(&self, name: &str) -> bool {
        self.0.iter().any(|crate_name| {
            name.strip_prefix(crate_name.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
    }
}

/// Reads the DWARF of the object `file`, keeping what concerns the `local` crates.
pub(crate) fn read_object(file: &object::File<'_>, local: &LocalCrateNames) -> Result<ObjectTypes> {
    let endian = if file.is_little_endian() {
        RunTimeEndian::Little
    } else {
        RunTimeEndian::Big
    };
    // One pass over the section headers: an object has a section per function.
    let mut debug_sections = HashMap::new();
    for section in file.sections() {
        let id = section
            .name()
            .ok()
            .and_then(|name| READ.into_iter().find(|id| id.name() == name));
        if let Some(id) = id {
            debug_sections.insert(id, section);
        }
    }
    let sections = gimli::DwarfSections::load(|id| match debug_sections.get(&id) {
        Some(section) => load_section(file, section),
        None => Ok((Cow::Borrowed(&[][..]), RelocationMap::default())),
    })
    .context(|| "could not read its debug sections".into())?;
    let dwarf = sections.borrow(|(data, relocations)| {
        RelocateReader::new(EndianSlice::new(data, endian), Relocations(relocations))
    });
    let mut found = ObjectTypes::default();
    let mut headers = dwarf.units();
    let malformed = |e: gimli::Error| format!("malformed DWARF: {e}");
    while let Some(header) = headers.next().map_err(malformed).context(String::new)? {
        let unit = dwarf.unit(header).map_err(malformed).context(String::new)?;
        let dies = Dies::read(&dwarf, &unit)
            .map_err(malformed)
            .context(String::new)?;
        UnitTypes { dies: &dies, local }.collect(&dwarf, &unit, &mut found);
        found.described = true;
    }
    Ok(found)
}

/// The sections read here; the others (location lists, ranges…) stay empty.
const READ: [SectionId; 7] = [
    SectionId::DebugAbbrev,
    SectionId::DebugAddr,
    SectionId::DebugInfo,
    SectionId::DebugLine,
    SectionId::DebugLineStr,
    SectionId::DebugStr,
    SectionId::DebugStrOffsets,
];

fn load_section<'data>(
    file: &object::File<'data>,
    section: &object::Section<'data, '_>,
) -> std::result::Result<(Cow<'data, [u8]>, RelocationMap), object::Error> {
    let mut relocations = RelocationMap::default();
    for (offset, relocation) in section.relocations() {
        // Only absolute relocations matter; the others are thread-local offsets in location
        // expressions, which are not read.
        if relocation.kind() == RelocationKind::Absolute {
            relocations.add(file, offset, relocation)?;
        }
    }
    Ok((section.uncompressed_data()?, relocations))
}

/// The attributes of one entry that matter here.
#[derive(Debug)]
struct Die {
    tag: DwTag,
    parent: Option<UnitOffset>,
    children: Vec<UnitOffset>,
    name: Option<String>,
    linkage_name: Option<String>,
    type_ref: Option<UnitOffset>,
    byte_size: Option<u64>,
    alignment: Option<u64>,
    member_offset: Option<u64>,
    discr: Option<UnitOffset>,
    discr_value: Option<u64>,
    const_value: Option<i128>,
    count: Option<u64>,
    decl_file: Option<u64>,
    decl_line: Option<u64>,
    declaration: bool,
    specification: Option<UnitOffset>,
}

/// The entries of one unit that describe types, functions and statics, in offset order.
struct Dies {
    offsets: Vec<UnitOffset>,
    entries: Vec<Die>,
}

const COMPOSITES: [DwTag; 3] = [
    DW_TAG_structure_type,
    DW_TAG_union_type,
    DW_TAG_enumeration_type,
];

/// Entries that only stand for the type they modify or point to.
const TYPE_WRAPPERS: [DwTag; 7] = [
    DW_TAG_pointer_type,
    DW_TAG_reference_type,
    DW_TAG_rvalue_reference_type,
    DW_TAG_array_type,
    DW_TAG_const_type,
    DW_TAG_volatile_type,
    DW_TAG_typedef,
];

/// Whether an entry is kept: types, their parts, namespaces, functions and variables.
fn is_kept(tag: DwTag) -> bool {
    COMPOSITES.contains(&tag)
        || TYPE_WRAPPERS.contains(&tag)
        || matches!(
            tag,
            gimli::DW_TAG_namespace
                | gimli::DW_TAG_enumerator
                | gimli::DW_TAG_member
                | gimli::DW_TAG_variant_part
                | gimli::DW_TAG_variant
                | gimli::DW_TAG_template_type_parameter
                | gimli::DW_TAG_subrange_type
                | gimli::DW_TAG_base_type
                | gimli::DW_TAG_subprogram
                | gimli::DW_TAG_formal_parameter
                | gimli::DW_TAG_variable
                | gimli::DW_TAG_subroutine_type
        )
}

impl Dies {
    fn read(dwarf: &Dwarf<'_>, unit: &Unit<'_>) -> gimli::Result<Dies> {
        let mut dies = Dies {
            offsets: Vec::new(),
            entries: Vec::new(),
        };
        // The kept ancestors of the current entry, with their depths (None: not kept).
        let mut scopes: Vec<(isize, Option<UnitOffset>)> = Vec::new();
        let mut depth = 0;
        let mut entries = unit.entries();
        while let Some((delta, entry)) = entries.next_dfs()? {
            depth += delta;
            while scopes.last().is_some_and(|(d, _)| *d >= depth) {
                scopes.pop();
            }
            let parent = scopes.last().and_then(|(_, offset)| *offset);
            let tag = entry.tag();
            if !is_kept(tag) {
                scopes.push((depth, None));
                continue;
            }
            let mut die = Die {
                tag,
                parent,
                children: Vec::new(),
                name: None,
                linkage_name: None,
                type_ref: None,
                byte_size: None,
                alignment: None,
                member_offset: None,
                discr: None,
                discr_value: None,
                const_value: None,
                count: None,
                decl_file: None,
                decl_line: None,
                declaration: false,
                specification: None,
            };
            let mut attributes = entry.attrs();
            while let Some(attribute) = attributes.next()? {
                let value = attribute.value();
                match attribute.name() {
                    gimli::DW_AT_name => die.name = Some(string(dwarf, unit, value)?),
                    gimli::DW_AT_linkage_name | gimli::DW_AT_MIPS_linkage_name => {
                        die.linkage_name = Some(string(dwarf, unit, value)?)
                    }
                    gimli::DW_AT_type => die.type_ref = unit_ref(value),
                    gimli::DW_AT_byte_size => die.byte_size = value.udata_value(),
                    gimli::DW_AT_alignment => die.alignment = value.udata_value(),
                    gimli::DW_AT_data_member_location => die.member_offset = value.udata_value(),
                    gimli::DW_AT_discr => die.discr = unit_ref(value),
                    gimli::DW_AT_discr_value => die.discr_value = value.udata_value(),
                    gimli::DW_AT_const_value => die.const_value = constant(value),
                    gimli::DW_AT_count => die.count = value.udata_value(),
                    gimli::DW_AT_upper_bound if die.count.is_none() => {
                        die.count = value.udata_value().map(|bound| bound + 1)
                    }
                    gimli::DW_AT_decl_file => {
                        if let AttributeValue::FileIndex(index) = value {
                            die.decl_file = Some(index);
                        }
                    }
                    gimli::DW_AT_decl_line => die.decl_line = value.udata_value(),
                    gimli::DW_AT_declaration => die.declaration = true,
                    gimli::DW_AT_specification => die.specification = unit_ref(value),
                    _ => {}
                }
            }
            let offset = entry.offset();
            if let Some(parent) = parent.and_then(|parent| dies.position(parent)) {
                dies.entries[parent].children.push(offset);
            }
            // Depth-first order is offset order: `offsets` stays sorted.
            dies.offsets.push(offset);
            dies.entries.push(die);
            scopes.push((depth, Some(offset)));
        }
        Ok(dies)
    }

    fn position(&self, offset: UnitOffset) -> Option<usize> {
        self.offsets.binary_search(&offset).ok()
    }

    fn get(&self, offset: UnitOffset) -> Option<&Die> {
        Some(&self.entries[self.position(offset)?])
    }

    fn children<'a>(&'a self, die: &'a Die, tag: DwTag) -> impl Iterator<Item = &'a Die> {
        die.children
            .iter()
            .filter_map(|child| self.get(*child))
            .filter(move |child| child.tag == tag)
    }
}

fn string(
    dwarf: &Dwarf<'_>,
    unit: &Unit<'_>,
    value: AttributeValue<Reader<'_>>,
) -> gimli::Result<String> {
    Ok(dwarf
        .attr_string(unit, value)?
        .to_string_lossy()?
        .into_owned())
}

fn unit_ref(value: AttributeValue<Reader<'_>>) -> Option<UnitOffset> {
    match value {
        AttributeValue::UnitRef(offset) => Some(offset),
        _ => None,
    }
}

fn constant(value: AttributeValue<Reader<'_>>) -> Option<i128> {
    match value {
        AttributeValue::Sdata(value) => Some(value.into()),
        value => value.udata_value().map(i128::from),
    }
}

/// True when `name` mentions a path that starts at the crate (`demo::Ball`, `&[demo::Ball]`),
/// not a crate or module whose name merely ends the same way.
pub(crate) fn mentions_crate(name: &str, crate_name: &str) -> bool {
    name.match_indices(crate_name).any(|(at, _)| {
        let before = name[..at].chars().next_back();
        let starts_path = !before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        starts_path && name[at + crate_name.len()..].starts_with("::")
    })
}

/// Turns one unit's entries into the crate's types, functions and statics.
struct UnitTypes<'a> {
    dies: &'a Dies,
    local: &'a LocalCrateNames,
}

impl UnitTypes<'_> {
    fn collect(&self, dwarf: &Dwarf<'_>, unit: &Unit<'_>, found: &mut ObjectTypes) {
        let mut file_paths = HashMap::new();
        for die in &self.dies.entries {
            if self.is_named_type(die) {
                let name = self.qualified_name(die);
                if self.local.mentioned_in(&name) {
                    let info = TypeInfo {
                        layout: self.layout(die),
                        reaches: self.reaches_from_composite(die),
                        namespace: die
                            .parent
                            .and_then(|parent| self.dies.get(parent))
                            .map(|parent| self.qualified_name(parent))
                            .unwrap_or_default(),
                        state_lines: self.state_lines(die, |index| {
                            file_paths
                                .entry(index)
                                .or_insert_with(|| source_file(dwarf, unit, index))
                                .clone()
                        }),
                    };
                    found.types.insert(name.into(), Arc::new(info));
                }
                continue;
            }
            let is_function = die.tag == DW_TAG_subprogram;
            if !(is_function || die.tag == DW_TAG_variable) || die.declaration {
                continue;
            }
            if let Some(index) = die.decl_file {
                let file = file_paths
                    .entry(index)
                    .or_insert_with(|| source_file(dwarf, unit, index))
                    .clone();
                if let Some(file) = file {
                    self.note_namespace_file(die, file, found);
                }
            }
            let Some(linkage_name) = self.linkage_name(die).map(canonical_name) else {
                continue;
            };
            if is_function {
                let mut uses: Vec<TypeUse> = self
                    .dies
                    .children(die, DW_TAG_formal_parameter)
                    .map(|parameter| TypeUse {
                        role: format!("argument `{}`", parameter.name.as_deref().unwrap_or("_")),
                        reaches: self.reaches(parameter.type_ref),
                    })
                    .collect();
                uses.push(TypeUse {
                    role: "return value".into(),
                    reaches: self.reaches(die.type_ref),
                });
                uses.retain(|type_use| !type_use.reaches.is_empty());
                if !uses.is_empty() {
                    found.functions.insert(linkage_name.into(), uses.into());
                }
            } else if !is_function {
                let reaches = self.reaches(die.type_ref);
                if !reaches.is_empty() {
                    let type_use = TypeUse {
                        role: String::new(),
                        reaches,
                    };
                    found.statics.insert(linkage_name.to_owned(), type_use);
                }
            }
        }
    }

    /// Records `file` for the namespace `die` is in and, for a function, for the function's
    /// own path (types declared inside a function body live in its namespace).
    fn note_namespace_file(&self, die: &Die, file: SourceFile, found: &mut ObjectTypes) {
        let Some(parent) = die.parent.and_then(|parent| self.dies.get(parent)) else {
            return;
        };
        if parent.tag != DW_TAG_namespace {
            return;
        }
        let namespace = self.qualified_name(parent);
        if !self.local.own(&namespace) {
            return;
        }
        if die.tag == DW_TAG_subprogram {
            if let Some(name) = &die.name {
                found
                    .namespace_files
                    .entry(format!("{namespace}::{name}"))
                    .or_insert_with(|| file.clone());
            }
        }
        found.namespace_files.entry(namespace).or_insert(file);
    }

    /// The lines of a state machine's variants, when rustc gives them (it does for the
    /// futures of async fns and blocks, whose variant members carry `DW_AT_decl_line`).
    fn state_lines(
        &self,
        die: &Die,
        mut file: impl FnMut(u64) -> Option<SourceFile>,
    ) -> Option<StateLines> {
        let part = self.dies.children(die, DW_TAG_variant_part).next()?;
        let mut state_lines = StateLines::default();
        for variant in self.dies.children(part, DW_TAG_variant) {
            let Some(member) = self.dies.children(variant, DW_TAG_member).next() else {
                continue;
            };
            let Some(line) = member.decl_line else {
                continue;
            };
            if state_lines.file.is_none() {
                state_lines.file = member.decl_file.and_then(&mut file);
            }
            state_lines.lines.insert(self.variant_name(member), line);
        }
        (!state_lines.lines.is_empty()).then_some(state_lines)
    }

    /// A variant's name: its payload's. The member naming the variant of an enum is named
    /// like it, but a state machine's are numbered (`3`) while their payloads are named
    /// (`Suspend0`).
    fn variant_name(&self, member: &Die) -> String {
        member
            .type_ref
            .and_then(|payload| self.dies.get(payload)?.name.clone())
            .or_else(|| member.name.clone())
            .unwrap_or_default()
    }

    fn linkage_name<'d>(&'d self, die: &'d Die) -> Option<&'d str> {
        die.linkage_name.as_deref().or_else(|| {
            let specification = self.dies.get(die.specification?)?;
            specification.linkage_name.as_deref()
        })
    }

    /// A type definition with a name of its own. Enum variants are structs nested in their
    /// enum: they are part of the enum's layout, not types of their own.
    fn is_named_type(&self, die: &Die) -> bool {
        COMPOSITES.contains(&die.tag)
            && !die.declaration
            && die.name.is_some()
            && !die
                .parent
                .and_then(|parent| self.dies.get(parent))
                .is_some_and(|parent| COMPOSITES.contains(&parent.tag))
    }

    /// `demo::physics::Ball`: the names of the enclosing namespaces and types, then its own.
    fn qualified_name(&self, die: &Die) -> String {
        let mut parts = vec![die.name.as_deref().unwrap_or("?")];
        let mut parent = die.parent;
        while let Some(scope) = parent.and_then(|offset| self.dies.get(offset)) {
            if scope.tag == DW_TAG_namespace || COMPOSITES.contains(&scope.tag) {
                parts.push(scope.name.as_deref().unwrap_or("?"));
            }
            parent = scope.parent;
        }
        parts.reverse();
        parts.join("::")
    }

    /// How a field's type is spelled: its name, or `[T; N]` for an array.
    fn type_name(&self, offset: Option<UnitOffset>) -> String {
        let Some(die) = offset.and_then(|offset| self.dies.get(offset)) else {
            return "()".into();
        };
        if die.tag == DW_TAG_array_type {
            let element = self.type_name(die.type_ref);
            let lengths: Vec<_> = self.dies.children(die, DW_TAG_subrange_type).collect();
            return lengths
                .iter()
                .rev()
                .fold(element, |inner, range| match range.count {
                    Some(count) => format!("[{inner}; {count}]"),
                    None => format!("[{inner}]"),
                });
        }
        match (&die.name, die.tag) {
            (Some(_), _) => self.qualified_name(die),
            (None, gimli::DW_TAG_pointer_type) => format!("*{}", self.type_name(die.type_ref)),
            (None, _) => self.type_name(die.type_ref),
        }
    }

    fn fields(&self, die: &Die) -> Vec<Field> {
        self.dies
            .children(die, DW_TAG_member)
            .filter(|member| !member.declaration)
            .map(|member| Field {
                name: member.name.clone().unwrap_or_default(),
                offset: member.member_offset,
                type_name: self.type_name(member.type_ref),
            })
            .collect()
    }

    fn layout(&self, die: &Die) -> Layout {
        let shape = if die.tag == DW_TAG_enumeration_type {
            Shape::Fieldless {
                repr: self.type_name(die.type_ref),
                values: self
                    .dies
                    .children(die, DW_TAG_enumerator)
                    .map(|value| {
                        let name = value.name.clone().unwrap_or_default();
                        (name, value.const_value.unwrap_or_default())
                    })
                    .collect(),
            }
        } else if die.tag == DW_TAG_union_type {
            Shape::Union(self.fields(die))
        } else if let Some(part) = self.dies.children(die, DW_TAG_variant_part).next() {
            let discriminant =
                part.discr
                    .and_then(|d| self.dies.get(d))
                    .map(|member| Discriminant {
                        offset: member.member_offset,
                        type_name: self.type_name(member.type_ref),
                    });
            let variants = self
                .dies
                .children(part, DW_TAG_variant)
                .filter_map(|variant| {
                    let member = self.dies.children(variant, DW_TAG_member).next()?;
                    let payload = member.type_ref.and_then(|t| self.dies.get(t));
                    Some(Variant {
                        name: self.variant_name(member),
                        discriminant: variant.discr_value,
                        fields: payload.map(|p| self.fields(p)).unwrap_or_default(),
                    })
                })
                .collect();
            Shape::Enum {
                discriminant,
                variants,
            }
        } else {
            Shape::Struct(self.fields(die))
        };
        Layout {
            size: die.byte_size,
            align: die.alignment,
            shape,
        }
    }

    /// The crate's types a value of the type at `offset` leads to: the type itself if it is
    /// one, else what the pointer, reference or array leads to.
    fn reaches(&self, offset: Option<UnitOffset>) -> BTreeSet<String> {
        let mut reached = BTreeSet::new();
        self.reach(offset, &mut reached);
        reached
    }

    fn reach(&self, offset: Option<UnitOffset>, reached: &mut BTreeSet<String>) {
        let Some(die) = offset.and_then(|offset| self.dies.get(offset)) else {
            return;
        };
        if COMPOSITES.contains(&die.tag) {
            let name = self.qualified_name(die);
            if self.local.mentioned_in(&name) {
                reached.insert(name);
            }
        } else if TYPE_WRAPPERS.contains(&die.tag) {
            self.reach(die.type_ref, reached);
        }
    }

    /// What a composite's fields (of every variant) and generic arguments lead to.
    fn reaches_from_composite(&self, die: &Die) -> BTreeSet<String> {
        let mut reached = BTreeSet::new();
        self.reach_from_composite(die, &mut reached);
        reached
    }

    fn reach_from_composite(&self, die: &Die, reached: &mut BTreeSet<String>) {
        for member in self.dies.children(die, DW_TAG_member) {
            self.reach(member.type_ref, reached);
        }
        for parameter in self.dies.children(die, DW_TAG_template_type_parameter) {
            self.reach(parameter.type_ref, reached);
        }
        for part in self.dies.children(die, DW_TAG_variant_part) {
            if let Some(discriminant) = part.discr.and_then(|d| self.dies.get(d)) {
                self.reach(discriminant.type_ref, reached);
            }
            for variant in self.dies.children(part, DW_TAG_variant) {
                for member in self.dies.children(variant, DW_TAG_member) {
                    if let Some(payload) = member.type_ref.and_then(|t| self.dies.get(t)) {
                        self.reach_from_composite(payload, reached);
                    }
                }
            }
        }
    }
}

/// The file a `DW_AT_decl_file` index names, through the unit's line program header.
fn source_file(dwarf: &Dwarf<'_>, unit: &Unit<'_>, index: u64) -> Option<SourceFile> {
    let header = unit.line_program.as_ref()?.header();
    let file = header.file(index)?;
    let text = |value| -> Option<String> {
        Some(
            dwarf
                .attr_string(unit, value)
                .ok()?
                .to_string_lossy()
                .ok()?
                .into_owned(),
        )
    };
    let compile_dir = unit
        .comp_dir
        .as_ref()
        .and_then(|dir| Some(dir.to_string_lossy().ok()?.into_owned()))
        .map(PathBuf::from)
        .unwrap_or_default();
    let mut path = compile_dir.clone();
    if let Some(directory) = file.directory(header) {
        path.push(text(directory)?);
    }
    path.push(text(file.path_name())?);
    let shown = path
        .strip_prefix(&compile_dir)
        .unwrap_or(Path::new(&path))
        .display()
        .to_string();
    Some(SourceFile { path, shown })
}

#[cfg(test)]
mod tests {
    use super::mentions_crate;

    #[test]
    fn crate_mentions_are_whole_path_segments() {
        for name in [
            "demo::Ball",
            "core::option::Option<demo::Ball>",
            "&mut demo::physics::Ball",
            "(u8, demo::X)",
        ] {
            assert!(mentions_crate(name, "demo"), "{name}");
        }
        for name in ["mydemo::Ball", "demo_app::Ball", "demo", "core::demo::X"] {
            assert!(!mentions_crate(name, "demo"), "{name}");
        }
    }
}
