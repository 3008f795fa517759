//! Every named function and data object in a revision's objects, with a fingerprint of its
//! contents that two builds agree on exactly when the code is the same.
//!
//! rustc emits one section per function and per static, so a symbol's contents are its
//! bytes plus its relocations. Relocation targets are normalised: a named symbol counts by
//! its name; anonymous data (`.Lanon.*`, string literals, `GCC_except_table*`, constants
//! reached through section symbols) counts by its own contents, recursively, because its
//! name is not stable from one build to the next.
//!
//! Symbols are known by their [`canonical_name`]: ThinLTO (the release profile's default
//! thin-local LTO included) renames a LOCAL symbol used across codegen units to
//! `<name>.llvm.<hash>`, with a hash that changes on every build.

use super::cache::{ObjectCache, RevisionObjects, StoredObject};
use linker_shim::{Error, Result, Revision};
use object::{
    Object, ObjectSection, ObjectSymbol, RelocationFlags, RelocationTarget, SectionIndex,
};
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

/// What a symbol is, as far as patching cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SymbolKind {
    Function,
    Data,
    ThreadLocal,
}

/// Where one copy of a symbol is defined: a patch links `object` and takes `section` from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// The object file in the store's pool (one allocation for all its symbols).
    pub object: Arc<Path>,
    pub section: String,
    pub section_index: usize,
    pub symbol_index: usize,
    /// Offset of the symbol within its section.
    pub offset: u64,
    pub size: u64,
    /// LOCAL symbols (used only inside their object) are false; they may be defined in
    /// several objects under the same name.
    pub global: bool,
}

/// One named symbol of a revision, merged over all the objects that define it.
#[derive(Debug, Clone)]
pub struct IndexedSymbol {
    pub name: String,
    pub kind: SymbolKind,
    pub size: u64,
    /// Output section the symbol lands in: its section's name without the symbol's own
    /// name, e.g. `.text`, `.bss`, `.data.rel.ro`, `.tbss`.
    pub section_class: String,
    /// Equal in two revisions exactly when bytes and normalised relocations are equal.
    pub fingerprint: u64,
    pub definitions: Vec<Definition>,
    /// Named symbols this one refers to, directly or through anonymous data (each name one
    /// allocation however many symbols refer to it: see [`NameInterner`]).
    pub references: BTreeSet<Arc<str>>,
}

/// The named symbols of one revision, and who refers to whom.
#[derive(Debug, Clone, Default)]
pub struct SymbolIndex {
    symbols: BTreeMap<String, Arc<IndexedSymbol>>,
    /// For each symbol, the symbols that refer to it (directly, or through anonymous data
    /// such as a vtable).
    referrers: HashMap<Arc<str>, BTreeSet<Arc<str>>>,
}

impl SymbolIndex {
    /// Indexes the stored objects of `revision` (for a one-off diff; a session keeps an
    /// [`ObjectCache`] instead).
    pub fn load(revision: &Revision) -> Result<SymbolIndex> {
        let objects = ObjectCache::for_revision(revision).read(revision, revision)?;
        Ok(SymbolIndex::of(&objects))
    }

    /// Merges the symbols of a revision's objects: one entry per name.
    pub fn of(objects: &RevisionObjects) -> SymbolIndex {
        let mut by_name: BTreeMap<&str, Vec<&Arc<IndexedSymbol>>> = BTreeMap::new();
        for symbol in objects.objects.iter().flat_map(StoredObject::symbols) {
            by_name.entry(&symbol.name).or_default().push(symbol);
        }
        SymbolIndex::from_symbols(
            by_name
                .into_values()
                .filter_map(|copies| merge_copies(copies)),
        )
    }

    /// The index of `symbols`, one per name.
    pub(crate) fn from_symbols(
        symbols: impl IntoIterator<Item = Arc<IndexedSymbol>>,
    ) -> SymbolIndex {
        let symbols: BTreeMap<String, Arc<IndexedSymbol>> = symbols
            .into_iter()
            .map(|symbol| (symbol.name.clone(), symbol))
            .collect();
        let mut referrers: HashMap<Arc<str>, BTreeSet<Arc<str>>> = HashMap::new();
        for symbol in symbols.values() {
            let referrer: Arc<str> = Arc::from(symbol.name.as_str());
            for target in &symbol.references {
                referrers
                    .entry(Arc::clone(target))
                    .or_default()
                    .insert(Arc::clone(&referrer));
            }
        }
        SymbolIndex { symbols, referrers }
    }

    pub fn get(&self, name: &str) -> Option<&IndexedSymbol> {
        self.symbols.get(name).map(|symbol| &**symbol)
    }

    /// All symbols, ordered by mangled name.
    pub fn iter(&self) -> impl Iterator<Item = &IndexedSymbol> {
        self.symbols.values().map(|symbol| &**symbol)
    }

    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// The symbols that refer to `name`.
    pub fn referrers_of(&self, name: &str) -> Option<&BTreeSet<Arc<str>>> {
        self.referrers.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

/// One symbol from its copies in several objects (LOCAL instances, weak symbols such as
/// `DW.ref.rust_eh_personality`), all of one name: `None` when there are none. How many
/// copies and in which objects is not stable, so their distinct fingerprints combine as a
/// set (one distinct fingerprint stays as it is); definitions are ordered by object and
/// symbol, whatever order the copies came in. The usual single copy is shared, not copied.
pub(crate) fn merge_copies(copies: Vec<&Arc<IndexedSymbol>>) -> Option<Arc<IndexedSymbol>> {
    let (first, others) = copies.split_first()?;
    if others.is_empty() {
        return Some(Arc::clone(first));
    }
    let mut merged = IndexedSymbol::clone(first);
    let mut fingerprints = vec![first.fingerprint];
    for copy in others {
        fingerprints.push(copy.fingerprint);
        merged.definitions.extend(copy.definitions.iter().cloned());
        merged.references.extend(copy.references.iter().cloned());
    }
    fingerprints.sort_unstable();
    fingerprints.dedup();
    if let [single] = fingerprints[..] {
        merged.fingerprint = single;
    } else {
        merged.fingerprint = hash_of(&fingerprints);
    }
    merged
        .definitions
        .sort_by(|a, b| (&a.object, a.symbol_index).cmp(&(&b.object, b.symbol_index)));
    Some(Arc::new(merged))
}

/// `name` without the `.llvm.<hash>` suffix ThinLTO gives LOCAL symbols it promotes across
/// codegen units: the hash is new on every build, so the base's `f.llvm.123` and a patch's
/// `f.llvm.456` are the same `f`. Other names come back unchanged.
pub fn canonical_name(name: &str) -> &str {
    match name.rsplit_once(".llvm.") {
        Some((stem, hash))
            if !stem.is_empty()
                && !hash.is_empty()
                && hash.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            stem
        }
        _ => name,
    }
}

/// Names whose spelling changes between builds; their contents identify them instead.
pub fn is_anonymous(name: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        ".L",
        "alloc_",
        "anon.",
        "GCC_except_table",
        "__unnamed_",
        "str.",
    ];
    name.is_empty() || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

/// What a PC-relative relocation's addend lacks to point at its target: the 4 bytes of the
/// displacement itself (the CPU adds the address of the *next* instruction).
fn pc_relative_bias(r_type: u32) -> i64 {
    const PC_RELATIVE: [u32; 6] = [
        2,  // R_X86_64_PC32
        4,  // R_X86_64_PLT32
        9,  // R_X86_64_GOTPCREL
        24, // R_X86_64_PC64
        41, // R_X86_64_GOTPCRELX
        42, // R_X86_64_REX_GOTPCRELX
    ];
    if PC_RELATIVE.contains(&r_type) {
        4
    } else {
        0
    }
}

fn hash_of(value: &impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

#[derive(Debug, Clone, Copy)]
struct Relocation {
    offset: u64,
    r_type: u32,
    target: RelocationTarget,
    addend: i64,
}

/// The contents-derived identity of an anonymous section and the named symbols it reaches.
#[derive(Debug, Clone, Default)]
struct AnonymousData<'data> {
    fingerprint: u64,
    references: BTreeSet<&'data str>,
}

/// Per-object state: relocations by section, and the memo of anonymous data identities.
struct ObjectAnalysis<'data, 'file> {
    file: &'file object::File<'data>,
    /// Filled on demand: most relocations of an object are debug info, which is never read.
    relocations: HashMap<SectionIndex, Rc<[Relocation]>>,
    /// The one named symbol a section holds, if any: references through its section
    /// symbol count as references to that name.
    named_section_owner: HashMap<SectionIndex, &'data str>,
    anonymous: HashMap<SectionIndex, AnonymousData<'data>>,
}

/// One allocation per distinct name, shared by every symbol that refers to it.
#[derive(Debug, Default)]
pub(crate) struct NameInterner(HashSet<Arc<str>>);

impl NameInterner {
    fn intern(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.0.get(name) {
            return Arc::clone(known);
        }
        let name: Arc<str> = Arc::from(name);
        self.0.insert(Arc::clone(&name));
        name
    }
}

/// The named functions and data of the object `object`, stored at `path`.
pub(crate) fn index_object(
    object: &object::File<'_>,
    path: &Path,
    names: &mut NameInterner,
) -> Result<Vec<IndexedSymbol>> {
    let path: Arc<Path> = Arc::from(path);
    let mut analysis = ObjectAnalysis::new(object);
    let mut symbols = Vec::new();
    for symbol in object.symbols() {
        let kind = match symbol.kind() {
            object::SymbolKind::Text => SymbolKind::Function,
            object::SymbolKind::Data => SymbolKind::Data,
            object::SymbolKind::Tls => SymbolKind::ThreadLocal,
            _ => continue,
        };
        let (Ok(name), Some(section_index)) = (symbol.name(), symbol.section_index()) else {
            continue;
        };
        if symbol.is_undefined() || is_anonymous(name) {
            continue;
        }
        let section = object.section_by_index(section_index).map_err(|e| {
            Error::new(format!(
                "{}: symbol {name} names a missing section: {e}",
                path.display()
            ))
        })?;
        let section_name = section.name().unwrap_or_default().to_owned();
        let mut references = BTreeSet::new();
        let fingerprint = analysis.fingerprint_range(
            section_index,
            symbol.address(),
            symbol.size(),
            kind,
            &mut references,
        );
        let canonical = canonical_name(name);
        references.remove(canonical);
        let references = references
            .into_iter()
            .map(|name| names.intern(name))
            .collect();
        symbols.push(IndexedSymbol {
            name: canonical.to_owned(),
            kind,
            size: symbol.size(),
            section_class: section_class(&section_name, name),
            fingerprint,
            definitions: vec![Definition {
                object: Arc::clone(&path),
                section: section_name,
                section_index: section_index.0,
                symbol_index: symbol.index().0,
                offset: symbol.address(),
                size: symbol.size(),
                global: symbol.is_global(),
            }],
            references,
        });
    }
    Ok(symbols)
}

/// `.text._ZN3app4main17h…E` → `.text`; sections not named after the symbol stay as they are.
fn section_class(section: &str, symbol: &str) -> String {
    section
        .strip_suffix(symbol)
        .and_then(|class| class.strip_suffix('.'))
        .unwrap_or(section)
        .to_owned()
}

impl<'data, 'file> ObjectAnalysis<'data, 'file> {
    fn new(file: &'file object::File<'data>) -> Self {
        let mut owners: HashMap<SectionIndex, Vec<&'data str>> = HashMap::new();
        for symbol in file.symbols() {
            let named = matches!(
                symbol.kind(),
                object::SymbolKind::Text | object::SymbolKind::Data | object::SymbolKind::Tls
            );
            if let (true, Ok(name), Some(section)) = (named, symbol.name(), symbol.section_index())
            {
                if !is_anonymous(name) {
                    owners
                        .entry(section)
                        .or_default()
                        .push(canonical_name(name));
                }
            }
        }
        let named_section_owner = owners
            .into_iter()
            .filter_map(|(section, mut names)| {
                (names.len() == 1).then(|| (section, names.remove(0)))
            })
            .collect();
        ObjectAnalysis {
            file,
            relocations: HashMap::new(),
            named_section_owner,
            anonymous: HashMap::new(),
        }
    }

    /// The relocations that apply to `section`, by offset.
    fn relocations_of(&mut self, section: SectionIndex) -> Rc<[Relocation]> {
        let file = self.file;
        let relocations = self.relocations.entry(section).or_insert_with(|| {
            let Ok(section) = file.section_by_index(section) else {
                return Rc::from([]);
            };
            let mut list: Vec<Relocation> = section
                .relocations()
                .map(|(offset, relocation)| Relocation {
                    offset,
                    r_type: match relocation.flags() {
                        RelocationFlags::Elf { r_type } => r_type,
                        _ => 0,
                    },
                    target: relocation.target(),
                    addend: relocation.addend(),
                })
                .collect();
            list.sort_by_key(|relocation| relocation.offset);
            list.into()
        });
        Rc::clone(relocations)
    }

    /// Fingerprint of `size` bytes at `offset` in `section` with the relocations inside them;
    /// adds the named symbols they reach to `references`.
    fn fingerprint_range(
        &mut self,
        section: SectionIndex,
        offset: u64,
        size: u64,
        kind: impl Hash,
        references: &mut BTreeSet<&'data str>,
    ) -> u64 {
        let mut hasher = DefaultHasher::new();
        kind.hash(&mut hasher);
        size.hash(&mut hasher);
        if let Ok(section) = self.file.section_by_index(section) {
            // `.bss`-like sections have no bytes in the file: their size is their content.
            if let Ok(Some(bytes)) = section.data_range(offset, size) {
                bytes.hash(&mut hasher);
            }
        }
        let end = offset.saturating_add(size.max(1));
        let relocations = self.relocations_of(section);
        let first = relocations.partition_point(|relocation| relocation.offset < offset);
        for &relocation in relocations[first..]
            .iter()
            .take_while(|relocation| relocation.offset < end)
        {
            (relocation.offset - offset, relocation.r_type).hash(&mut hasher);
            self.hash_target(relocation, &mut hasher, references);
        }
        hasher.finish()
    }

    /// Hashes what a relocation points at: a name for named symbols, contents otherwise.
    fn hash_target(
        &mut self,
        relocation: Relocation,
        hasher: &mut DefaultHasher,
        references: &mut BTreeSet<&'data str>,
    ) {
        let addend = relocation.addend;
        let (section, base) = match relocation.target {
            RelocationTarget::Symbol(index) => {
                let Ok(symbol) = self.file.symbol_by_index(index) else {
                    return "missing-symbol".hash(hasher);
                };
                let name = canonical_name(symbol.name().unwrap_or_default());
                match symbol.section_index() {
                    Some(section) if symbol.kind() == object::SymbolKind::Section => (section, 0),
                    Some(section) if is_anonymous(name) => (section, symbol.address()),
                    _ => {
                        ("named", name, addend).hash(hasher);
                        references.insert(name);
                        return;
                    }
                }
            }
            RelocationTarget::Section(section) => (section, 0),
            _ => return ("absolute", addend).hash(hasher),
        };
        if let Some(owner) = self.named_section_owner.get(&section) {
            ("named", owner, base as i64 + addend).hash(hasher);
            references.insert(owner);
            return;
        }
        let referenced = (base as i64 + addend + pc_relative_bias(relocation.r_type)) as u64;
        if let Some(element) = self.merged_element(section, referenced) {
            // A pooled string or constant: its position in the pool moves whenever another
            // element changes, so only its bytes count.
            return ("merged", element).hash(hasher);
        }
        ("anonymous", base, addend).hash(hasher);
        self.hash_anonymous_section(section, hasher, references);
    }

    /// The element at `offset` of a mergeable section (`.rodata.str1.1`, `.rodata.cst16`):
    /// a NUL-terminated string, or `entsize` bytes. `None` for other sections.
    fn merged_element(&self, section: SectionIndex, offset: u64) -> Option<&'data [u8]> {
        const SHF_MERGE: u64 = 0x10;
        const SHF_STRINGS: u64 = 0x20;
        let section = self.file.section_by_index(section).ok()?;
        let object::SectionFlags::Elf { sh_flags } = section.flags() else {
            return None;
        };
        if sh_flags & SHF_MERGE == 0 {
            return None;
        }
        let data = section.data().ok()?;
        let rest = data.get(usize::try_from(offset).ok()?..)?;
        if sh_flags & SHF_STRINGS != 0 {
            let end = rest
                .iter()
                .position(|&b| b == 0)
                .map_or(rest.len(), |nul| nul + 1);
            return Some(&rest[..end]);
        }
        let name = section.name().ok()?;
        let entsize: usize = name
            .rsplit_once(".cst")
            .and_then(|(_, size)| size.parse().ok())?;
        rest.get(..entsize)
    }

    /// Hashes an anonymous section by contents (memoised; a cycle back into a section being
    /// hashed contributes a constant, which is the same in both builds).
    fn hash_anonymous_section(
        &mut self,
        section: SectionIndex,
        hasher: &mut DefaultHasher,
        references: &mut BTreeSet<&'data str>,
    ) {
        if let Some(known) = self.anonymous.get(&section) {
            known.fingerprint.hash(hasher);
            references.extend(known.references.iter().copied());
            return;
        }
        self.anonymous.insert(section, AnonymousData::default());
        let size = self.file.section_by_index(section).map_or(0, |s| s.size());
        let mut reached = BTreeSet::new();
        let fingerprint =
            self.fingerprint_range(section, 0, size, "anonymous-section", &mut reached);
        fingerprint.hash(hasher);
        references.extend(reached.iter().copied());
        self.anonymous.insert(
            section,
            AnonymousData {
                fingerprint,
                references: reached,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unstable_names_are_anonymous() {
        for name in [
            ".Lanon.5f3a.2",
            "alloc_9d1c",
            "GCC_except_table12",
            "anon.1f.0",
            "",
        ] {
            assert!(is_anonymous(name), "{name}");
        }
        assert!(!is_anonymous("_ZN3app4main17h0123456789abcdefE"));
        assert!(!is_anonymous("DW.ref.rust_eh_personality"));
    }

    #[test]
    fn thin_lto_suffixes_are_not_part_of_the_name() {
        let slot = "_ZN3app6hot_fn16__HOTRELOAD_SLOT17h0123456789abcdefE";
        assert_eq!(
            canonical_name(&format!("{slot}.llvm.12714399453069335871")),
            slot
        );
        assert_eq!(canonical_name(slot), slot);
        for kept in ["a.llvm.", ".llvm.123", "a.llvm.12x", "a.llvm.1.2"] {
            assert_eq!(canonical_name(kept), kept);
        }
    }

    #[test]
    fn section_class_strips_the_symbol_name() {
        assert_eq!(section_class(".text._ZN1a1fE", "_ZN1a1fE"), ".text");
        assert_eq!(
            section_class(".data.rel.ro._ZN1a1XE", "_ZN1a1XE"),
            ".data.rel.ro"
        );
        assert_eq!(section_class(".text", "_ZN1a1fE"), ".text");
    }
}

/// Hand-made symbols and indexes, for the tests of the stages that read an index (diff, plan).
#[cfg(test)]
pub(crate) mod synthetic {
    use super::*;
    use crate::pipeline::diff::demangle;

    /// The hash part of every synthetic name unless [`IndexedSymbol::renamed`] changes it.
    const HASH: u64 = 0x0123_4567_89ab_cdef;

    /// The legacy mangled name of `path` with `hash`: `app::step` → `_ZN3app4step17h…E`.
    pub fn mangled_with_hash(path: &str, hash: u64) -> String {
        let segments: String = path
            .split("::")
            .map(|segment| format!("{}{segment}", segment.len()))
            .collect();
        format!("_ZN{segments}17h{hash:016x}E")
    }

    /// The mangled name every synthetic symbol of `path` has unless renamed.
    pub fn mangled(path: &str) -> String {
        mangled_with_hash(path, HASH)
    }

    /// A symbol of `path`, 16 bytes, alone in the object `<path>.o`, with fingerprint 0.
    pub fn symbol(path: &str, kind: SymbolKind) -> IndexedSymbol {
        let section_class = match kind {
            SymbolKind::Function => ".text",
            SymbolKind::Data => ".data",
            SymbolKind::ThreadLocal => ".tbss",
        };
        let name = mangled(path);
        IndexedSymbol {
            kind,
            size: 16,
            section_class: section_class.into(),
            fingerprint: 0,
            definitions: vec![Definition {
                object: Path::new(&format!("{path}.o")).into(),
                section: format!("{section_class}.{name}"),
                section_index: 1,
                symbol_index: 1,
                offset: 0,
                size: 16,
                global: true,
            }],
            references: BTreeSet::new(),
            name,
        }
    }

    pub fn function(path: &str) -> IndexedSymbol {
        symbol(path, SymbolKind::Function)
    }

    impl IndexedSymbol {
        /// The same symbol with other contents.
        pub fn version(mut self, fingerprint: u64) -> Self {
            self.fingerprint = fingerprint;
            self
        }

        /// The same path under another mangled name (as when a static's type changes).
        pub fn renamed(mut self, hash: u64) -> Self {
            self.name = mangled_with_hash(&demangle(&self.name), hash);
            self
        }

        /// The same symbol referring to `others` (calls, address taken).
        pub fn referring_to(mut self, others: &[&IndexedSymbol]) -> Self {
            self.references
                .extend(others.iter().map(|other| Arc::from(other.name.as_str())));
            self
        }

        /// The same symbol with `size` bytes in the output section `section_class`.
        pub fn laid_out(mut self, size: u64, section_class: &str) -> Self {
            self.size = size;
            self.section_class = section_class.into();
            self
        }
    }

    /// The index of `symbols`.
    pub fn index<'a>(symbols: impl IntoIterator<Item = &'a IndexedSymbol>) -> SymbolIndex {
        SymbolIndex::from_symbols(symbols.into_iter().cloned().map(Arc::new))
    }

    /// The object file `path` of crate `app`, defining `symbols` (moved into it).
    pub fn object(path: &str, symbols: &[IndexedSymbol]) -> StoredObject {
        let symbols = symbols
            .iter()
            .map(|symbol| {
                let mut symbol = symbol.clone();
                for definition in &mut symbol.definitions {
                    definition.object = Path::new(path).into();
                }
                Arc::new(symbol)
            })
            .collect();
        StoredObject {
            path: std::path::PathBuf::from(path),
            crate_name: "app".into(),
            parsed: std::sync::Arc::new(super::super::cache::ParsedObject {
                symbols,
                types: Default::default(),
                fingerprints: HashMap::new(),
            }),
        }
    }

    /// A revision made of `objects`.
    pub fn revision(objects: &[&StoredObject]) -> RevisionObjects {
        RevisionObjects {
            crates: Default::default(),
            objects: objects.iter().map(|&object| object.clone()).collect(),
        }
    }
}
