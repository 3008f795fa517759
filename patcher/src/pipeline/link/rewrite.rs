//! Rewrites copies of the new object files so the patch binds to the running program's state.
//!
//! The linker can redirect *global* symbols to the executable (the image link defines them
//! there), but not three kinds of reference rustc emits:
//! - a static used only inside its codegen unit is LOCAL and referenced as section symbol +
//!   addend (`.bss.<mangled>` + 0): relinking would silently make a second instance. Such
//!   references are pointed at a new undefined global `hotpatch.bind.<mangled>`, which the
//!   image link then defines at the running instance;
//! - thread-locals (`R_X86_64_TPOFF32`, `R_X86_64_GOTTPOFF`) must reach each thread's existing
//!   value: the `%fs` offset is written into the code and the relocation dropped (for
//!   GOTTPOFF the initial-exec load is relaxed to local-exec by hand);
//! - the `#[hotreload]` implementations that become slot targets are LOCAL, so they are made
//!   global: the image link keeps them (`-u`) and the patcher finds their address. Entry
//!   points lose a ThinLTO `.llvm.<hash>` suffix (in every object, references included), so
//!   they are found by the name the plan knows them by.
//!
//! COMDAT groups are dropped (their signature indices would go stale when symbols are
//! reordered); the executable already holds the one instance of their contents.

use crate::pipeline::objects::exe::{BaseExecutable, ExeSymbolKind};
use crate::pipeline::objects::symbols::canonical_name;
use linker_shim::{Context, Error, Result};
use object::build::elf::{Builder, SectionData, SymbolId};
use object::elf;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

/// Prefix of the symbols that bind a patch's references to existing data.
pub const BIND_PREFIX: &str = "hotpatch.bind.";

/// What the rewrite needs to know about the running program.
pub struct BindingContext<'a> {
    pub exe: &'a BaseExecutable,
    /// Data added by earlier patches that are still mapped: canonical name → link-time
    /// address.
    pub earlier_patch_data: &'a HashMap<String, u64>,
    /// Functions the program will be pointed at (slot implementations, redirected
    /// functions), by canonical name: made global so the image reports their addresses.
    pub entry_points: &'a HashSet<String>,
}

impl BindingContext<'_> {
    /// The running instance of data item `name`, if there is one.
    pub fn running_data(&self, name: &str) -> Option<u64> {
        match self.exe.symbol(name) {
            Some(symbol) if symbol.kind == ExeSymbolKind::Data => Some(symbol.address),
            _ => self.earlier_patch_data.get(canonical_name(name)).copied(),
        }
    }
}

/// Section-name prefixes under which rustc places one data item per section.
const DATA_SECTION_PREFIXES: [&str; 4] = [".bss.", ".data.rel.ro.", ".data.", ".rodata."];
const TLS_SECTION_PREFIXES: [&str; 2] = [".tbss.", ".tdata."];

/// Writes a rewritten copy of `input` to `output`. Returns the binding symbols it created,
/// each with the link-time address it must be defined at.
pub fn rewrite_object(
    input: &Path,
    output: &Path,
    context: &BindingContext<'_>,
) -> Result<BTreeMap<String, u64>> {
    let mut data =
        std::fs::read(input).context(|| format!("could not read {}", input.display()))?;
    normalise_section_headers(&mut data)
        .context(|| format!("could not parse the object {}", input.display()))?;
    let mut builder = Builder::read(&*data)
        .context(|| format!("could not parse the object {}", input.display()))?;
    if !builder
        .sections
        .iter()
        .any(|s| matches!(s.data, SectionData::SectionString))
    {
        // LLVM shares `.strtab` between section and symbol names; the builder wants its own.
        let names = builder.sections.add();
        names.name = b".shstrtab"[..].into();
        names.sh_type = elf::SHT_STRTAB;
        names.sh_addralign = 1;
        names.data = SectionData::SectionString;
    }
    let mut bindings = BTreeMap::new();
    let edits = plan_relocations(&mut builder, context, &mut bindings)
        .map_err(|e| Error::new(format!("{} (in {})", e.message(), input.display())))?;
    for (section, offset, bytes) in edits {
        if let SectionData::Data(contents) = &mut builder.sections.get_mut(section).data {
            let start = offset as usize;
            contents.to_mut()[start..start + bytes.len()].copy_from_slice(&bytes);
        }
    }
    let registry = hotreload_abi::slot::SECTION.as_bytes();
    let mut deleted = Vec::new();
    for section in builder.sections.iter_mut() {
        // Registry entries stay the executable's: the image must not carry a second set.
        if &*section.name == GROUP_SECTION || &*section.name == registry {
            section.delete = true;
            deleted.push(section.id());
        }
    }
    for section in builder.sections.iter_mut() {
        if section
            .sh_info_section
            .is_some_and(|target| deleted.contains(&target))
        {
            section.delete = true;
        }
    }
    builder.delete_orphans();
    for symbol in builder.symbols.iter_mut() {
        let name = String::from_utf8_lossy(&symbol.name).into_owned();
        let canonical = canonical_name(&name);
        if !context.entry_points.contains(canonical) {
            continue;
        }
        if canonical != name {
            symbol.name = canonical.as_bytes().to_vec().into();
        }
        if symbol.st_bind() == elf::STB_LOCAL {
            symbol.set_st_info(elf::STB_GLOBAL, symbol.st_type());
            symbol.st_other = elf::STV_HIDDEN;
        }
    }
    let mut out = Vec::with_capacity(data.len() + 4096);
    builder
        .write(&mut out)
        .context(|| format!("could not write the rewritten {}", input.display()))?;
    std::fs::write(output, out).context(|| format!("could not write {}", output.display()))?;
    Ok(bindings)
}

const GROUP_SECTION: &[u8] = b".group";

/// Prepares the raw section headers for `object`'s ELF builder, which can't read
/// `SHT_GROUP` sections and only follows a relocation section's `sh_info` when the section
/// says so (`SHF_INFO_LINK`, which LLVM leaves off for COMDAT members). Groups are deleted
/// later, so they become plain data here; their members lose `SHF_GROUP`.
fn normalise_section_headers(data: &mut [u8]) -> object::read::Result<()> {
    use object::read::elf::{FileHeader, SectionHeader};
    let endian = object::LittleEndian;
    let header = elf::FileHeader64::<object::LittleEndian>::parse(&*data)?;
    let table_offset = header.e_shoff(endian) as usize;
    let fixes: Vec<(usize, u32, u64)> = header
        .section_headers(endian, &*data)?
        .iter()
        .enumerate()
        .map(|(index, section)| {
            let (sh_type, mut flags) = (section.sh_type(endian), section.sh_flags(endian));
            flags &= !u64::from(elf::SHF_GROUP);
            if sh_type == elf::SHT_RELA {
                flags |= u64::from(elf::SHF_INFO_LINK);
            }
            let sh_type = if sh_type == elf::SHT_GROUP {
                elf::SHT_PROGBITS
            } else {
                sh_type
            };
            (index, sh_type, flags)
        })
        .collect();
    let entry_size = size_of::<elf::SectionHeader64<object::LittleEndian>>();
    for (index, sh_type, flags) in fixes {
        let at = table_offset + index * entry_size;
        data[at + 4..at + 8].copy_from_slice(&sh_type.to_le_bytes());
        data[at + 8..at + 16].copy_from_slice(&flags.to_le_bytes());
    }
    Ok(())
}

/// What a relocation's target symbol refers to.
struct Target {
    /// The item's mangled name (for section symbols: taken from the section name).
    name: String,
    local: bool,
    thread_local: bool,
}

fn describe_target(builder: &Builder<'_>, symbol: SymbolId) -> Option<Target> {
    let symbol = builder.symbols.get(symbol);
    let local = symbol.st_bind() == elf::STB_LOCAL;
    if symbol.st_type() == elf::STT_SECTION {
        let section = builder.sections.get(symbol.section?);
        let section_name = String::from_utf8_lossy(&section.name);
        let (prefix, thread_local) = DATA_SECTION_PREFIXES
            .iter()
            .map(|p| (p, false))
            .chain(TLS_SECTION_PREFIXES.iter().map(|p| (p, true)))
            .find(|(prefix, _)| section_name.starts_with(**prefix))?;
        return Some(Target {
            name: section_name[prefix.len()..].to_string(),
            local,
            thread_local,
        });
    }
    let name = String::from_utf8_lossy(&symbol.name).into_owned();
    (!name.is_empty()).then_some(Target {
        name,
        local,
        thread_local: symbol.st_type() == elf::STT_TLS,
    })
}

/// Byte edits to make in code: (section, offset, new bytes).
type CodeEdits = Vec<(object::build::elf::SectionId, u64, Vec<u8>)>;

/// Retargets relocations in place and returns the code edits the TLS rewrites need.
fn plan_relocations(
    builder: &mut Builder<'_>,
    context: &BindingContext<'_>,
    bindings: &mut BTreeMap<String, u64>,
) -> Result<CodeEdits> {
    let mut edits = CodeEdits::new();
    let mut binding_symbols: HashMap<String, SymbolId> = HashMap::new();
    let relocation_sections: Vec<_> = builder
        .sections
        .iter()
        .filter(|s| matches!(s.data, SectionData::Relocation(_)))
        .map(|s| (s.id(), s.sh_info_section))
        // Only code and data that get loaded; debug info may keep naming the originals.
        .filter(|(_, target)| target.is_some_and(|t| builder.sections.get(t).is_alloc()))
        .collect();
    for (relocation_section, target_section) in relocation_sections {
        let SectionData::Relocation(relocations) = &builder.sections.get(relocation_section).data
        else {
            continue;
        };
        let mut relocations = relocations.clone();
        for relocation in &mut relocations {
            let Some(target) = relocation.symbol.and_then(|s| describe_target(builder, s)) else {
                continue;
            };
            if target.thread_local {
                let section = target_section
                    .ok_or_else(|| Error::new("a TLS relocation outside any section"))?;
                let offset = context.exe.thread_pointer_offset(&target.name).ok_or_else(|| {
                    Error::new(format!(
                        "the patch adds the thread-local `{}`; new `thread_local!`s can't be added to a running program: restart it",
                        crate::pipeline::diff::demangle(&target.name)
                    ))
                })?;
                let code = match &builder.sections.get(section).data {
                    SectionData::Data(bytes) => bytes.as_slice(),
                    _ => return Err(Error::new("a TLS relocation in a section without bytes")),
                };
                let (at, bytes) = tls_edit(
                    code,
                    relocation.r_type,
                    relocation.r_offset,
                    relocation.r_addend,
                    offset,
                    &target.name,
                )?;
                edits.push((section, at, bytes));
                relocation.r_type = elf::R_X86_64_NONE;
                relocation.symbol = None;
                relocation.r_addend = 0;
            } else if target.local {
                let Some(address) = context.running_data(&target.name) else {
                    continue;
                };
                let binding = format!("{BIND_PREFIX}{}", target.name);
                bindings.insert(binding.clone(), address);
                let id = *binding_symbols.entry(binding.clone()).or_insert_with(|| {
                    let symbol = builder.symbols.add();
                    symbol.name = binding.into_bytes().into();
                    symbol.set_st_info(elf::STB_GLOBAL, elf::STT_NOTYPE);
                    symbol.st_other = elf::STV_DEFAULT;
                    symbol.id()
                });
                relocation.symbol = Some(id);
            }
        }
        builder.sections.get_mut(relocation_section).data = SectionData::Relocation(relocations);
    }
    Ok(edits)
}

/// The code bytes that make a thread-local access use `%fs` offset `tp_offset` directly.
fn tls_edit(
    code: &[u8],
    r_type: u32,
    r_offset: u64,
    addend: i64,
    tp_offset: i64,
    name: &str,
) -> Result<(u64, Vec<u8>)> {
    let at = r_offset as usize;
    let unsupported = || {
        Error::new(format!(
            "unsupported thread-local access (relocation type {r_type}) to `{}`: restart the program",
            crate::pipeline::diff::demangle(name)
        ))
    };
    match r_type {
        // Local-exec: the 32-bit field holds the %fs offset itself.
        elf::R_X86_64_TPOFF32 => {
            let value = i32::try_from(tp_offset + addend).map_err(|_| unsupported())?;
            Ok((r_offset, value.to_le_bytes().to_vec()))
        }
        // Initial-exec: `mov foo@gottpoff(%rip), %reg` (48/4c 8b modrm) or `add …` (48/4c 03
        // modrm) becomes `mov $imm, %reg` (48/49 c7 c0|reg) or `add $imm, %reg` (48/49 81 c0|reg).
        elf::R_X86_64_GOTTPOFF if at >= 3 => {
            let (rex, opcode, modrm) = (code[at - 3], code[at - 2], code[at - 1]);
            let new_rex = match rex {
                0x48 => 0x48,
                0x4c => 0x49,
                _ => return Err(unsupported()),
            };
            let new_opcode = match opcode {
                0x8b => 0xc7,
                0x03 => 0x81,
                _ => return Err(unsupported()),
            };
            if modrm & 0xc7 != 0x05 {
                return Err(unsupported());
            }
            let value = i32::try_from(tp_offset).map_err(|_| unsupported())?;
            let mut bytes = vec![new_rex, new_opcode, 0xc0 | ((modrm >> 3) & 7)];
            bytes.extend_from_slice(&value.to_le_bytes());
            Ok((r_offset - 3, bytes))
        }
        _ => Err(unsupported()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gottpoff_mov_is_relaxed_to_an_immediate() {
        // mov 0x0(%rip),%rax ; mov 0x0(%rip),%r9
        let code = [0x48, 0x8b, 0x05, 0, 0, 0, 0, 0x4c, 0x8b, 0x0d, 0, 0, 0, 0];
        let (at, bytes) = tls_edit(&code, elf::R_X86_64_GOTTPOFF, 3, -4, -16, "x").unwrap();
        assert_eq!(
            (at, bytes),
            (0, vec![0x48, 0xc7, 0xc0, 0xf0, 0xff, 0xff, 0xff])
        );
        let (at, bytes) = tls_edit(&code, elf::R_X86_64_GOTTPOFF, 10, -4, -8, "x").unwrap();
        assert_eq!(
            (at, bytes),
            (7, vec![0x49, 0xc7, 0xc1, 0xf8, 0xff, 0xff, 0xff])
        );
    }

    #[test]
    fn tpoff32_gets_the_offset_plus_addend() {
        let (at, bytes) = tls_edit(&[0; 8], elf::R_X86_64_TPOFF32, 4, 8, -24, "x").unwrap();
        assert_eq!((at, bytes), (4, (-16i32).to_le_bytes().to_vec()));
    }

    #[test]
    fn other_tls_models_are_refused() {
        let error = tls_edit(&[0; 8], elf::R_X86_64_TLSGD, 4, 0, 0, "x").unwrap_err();
        assert!(
            error.message().contains("unsupported thread-local access"),
            "{error}"
        );
    }
}
