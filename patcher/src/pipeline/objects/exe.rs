//! The running program's executable, parsed once per session: where each of its symbols
//! lives, so a patch can bind to the running instances instead of making new ones.
//!
//! A dev-profile executable keeps `.symtab`, with Rust items as LOCAL symbols (the linker
//! demotes hidden ones); `.dynsym` has none of them, so `.symtab` is the source of truth.
//! Symbols are known by their [`canonical_name`], as in the objects' index: a release
//! build's `f.llvm.<hash>` is `f`, whatever hash the patch's build gave it.

use super::symbols::canonical_name;
use hotreload_abi::protocol::AGENT_STATIC_PATH;
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic};
use linker_shim::{Context, Error, Result};
use object::elf::{PT_LOAD, PT_TLS};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSection, ObjectSymbol, SymbolKind};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// What kind of thing a symbol of the executable is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExeSymbolKind {
    Function,
    Data,
    ThreadLocal,
}

/// One uniquely named symbol of the executable, in its link-time coordinates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExeSymbol {
    /// Link-time address; for thread-locals, the offset inside the TLS segment.
    pub address: u64,
    pub size: u64,
    pub kind: ExeSymbolKind,
}

/// Bytes of a `jmp rel32`, what an entry redirect writes.
pub const JMP_LEN: u64 = 5;

/// Why a function's entry can't take a jump to its new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRedirectable {
    /// The executable has no function of that name, or several.
    NotUnique,
    /// Other functions start at the same address: a jump would redirect them too.
    Aliased { names: usize },
    /// Fewer than [`JMP_LEN`] bytes before the next symbol.
    TooSmall { room: u64 },
    /// Code inside the function jumps to its first bytes (a loop header at the entry), or
    /// returns into them (a call inside them): it would land in the jump.
    BranchIntoEntry { from: u64 },
    /// Its code could not be read from the executable.
    NoCode,
}

impl std::fmt::Display for NotRedirectable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRedirectable::NotUnique => {
                write!(f, "the executable has no single function of that name")
            }
            NotRedirectable::Aliased { names } => {
                write!(f, "{names} functions share its address")
            }
            NotRedirectable::TooSmall { room } => {
                write!(
                    f,
                    "only {room} bytes before the next symbol; a jump needs {JMP_LEN}"
                )
            }
            NotRedirectable::BranchIntoEntry { from } => write!(
                f,
                "its code at offset {from} branches into its first {JMP_LEN} bytes"
            ),
            NotRedirectable::NoCode => write!(f, "its code is not in the executable's file"),
        }
    }
}

/// The executable a session patches.
#[derive(Debug)]
pub struct BaseExecutable {
    pub path: PathBuf,
    pub build_id: String,
    /// Canonical names defined exactly once (a name defined at two addresses can't be bound
    /// to).
    symbols: HashMap<String, ExeSymbol>,
    functions_by_address: HashMap<u64, String>,
    /// How many differently named functions start at each address (std has aliases).
    names_at: HashMap<u64, usize>,
    /// Start addresses of every function and data symbol, sorted: the next one bounds how
    /// many bytes an entry redirect may overwrite.
    starts: Vec<u64>,
    /// The executable's code: link-time address of the first byte, and the bytes.
    text: (u64, Vec<u8>),
    /// Link-time addresses its `PT_LOAD` segments span: what patch images must stay within
    /// rel32 reach of.
    pub loaded: Range<u64>,
    /// `align_up(PT_TLS.p_memsz, PT_TLS.p_align)`: x86-64 variant II puts the executable's TLS
    /// block right below the thread pointer, so a TLS symbol's `%fs` offset is
    /// `st_value - tls_block_size`.
    tls_block_size: Option<u64>,
}

impl BaseExecutable {
    pub fn open(path: &Path) -> Result<BaseExecutable> {
        let data = std::fs::read(path)
            .context(|| format!("could not read the executable {}", path.display()))?;
        let elf = ElfFile64::<object::LittleEndian>::parse(&*data)
            .context(|| format!("{} is not an x86-64 ELF executable", path.display()))?;
        let build_id = elf
            .build_id()
            .ok()
            .flatten()
            .map(|id| id.iter().map(|b| format!("{b:02x}")).collect())
            .ok_or_else(|| Error::new(format!("{} has no GNU build-id note", path.display())))?;
        let endian = elf.endian();
        let mut tls_block_size = None;
        let segments = elf
            .elf_program_headers()
            .iter()
            .filter(|header| header.p_type(endian) == PT_LOAD)
            .map(|header| (header.p_vaddr(endian), header.p_memsz(endian)));
        let loaded = segments.clone().map(|(start, _)| start).min().unwrap_or(0)
            ..segments
                .map(|(start, size)| start.saturating_add(size))
                .max()
                .unwrap_or(0);
        for header in elf.elf_program_headers() {
            if header.p_type(endian) == PT_TLS {
                let align = header.p_align(endian).max(1);
                tls_block_size = Some(header.p_memsz(endian).div_ceil(align) * align);
            }
        }
        let mut symbols: HashMap<String, ExeSymbol> = HashMap::new();
        let mut ambiguous: Vec<String> = Vec::new();
        let mut functions_by_address = HashMap::new();
        let mut named_at: HashMap<u64, std::collections::HashSet<String>> = HashMap::new();
        let mut starts = Vec::new();
        for symbol in elf.symbols() {
            let kind = match symbol.kind() {
                SymbolKind::Text => ExeSymbolKind::Function,
                SymbolKind::Data => ExeSymbolKind::Data,
                SymbolKind::Tls => ExeSymbolKind::ThreadLocal,
                _ => continue,
            };
            let (Ok(name), false) = (symbol.name(), symbol.is_undefined()) else {
                continue;
            };
            if name.is_empty() {
                continue;
            }
            let name = canonical_name(name);
            let entry = ExeSymbol {
                address: symbol.address(),
                size: symbol.size(),
                kind,
            };
            if kind == ExeSymbolKind::Function {
                functions_by_address
                    .entry(entry.address)
                    .or_insert_with(|| name.to_string());
                named_at
                    .entry(entry.address)
                    .or_default()
                    .insert(name.to_string());
            }
            if kind != ExeSymbolKind::ThreadLocal {
                starts.push(entry.address);
            }
            match symbols.get(name) {
                Some(existing) if existing.address != entry.address => {
                    ambiguous.push(name.to_string())
                }
                Some(_) => {}
                None => {
                    symbols.insert(name.to_string(), entry);
                }
            }
        }
        for name in ambiguous {
            symbols.remove(&name);
        }
        starts.sort_unstable();
        starts.dedup();
        let text = elf
            .section_by_name(".text")
            .and_then(|section| Some((section.address(), section.data().ok()?.to_vec())))
            .unwrap_or_default();
        Ok(BaseExecutable {
            path: path.to_path_buf(),
            build_id,
            symbols,
            functions_by_address,
            names_at: named_at
                .into_iter()
                .map(|(address, names)| (address, names.len()))
                .collect(),
            starts,
            text,
            loaded,
            tls_block_size,
        })
    }

    /// The uniquely named symbol `name` (any `.llvm.<hash>` suffix ignored), if the
    /// executable has one.
    pub fn symbol(&self, name: &str) -> Option<&ExeSymbol> {
        self.symbols.get(canonical_name(name))
    }

    /// The function starting at link-time `address`, by canonical name (used to name a
    /// slot's implementation).
    pub fn function_at(&self, address: u64) -> Option<&str> {
        self.functions_by_address.get(&address).map(String::as_str)
    }

    /// The link-time entry of function `name` if a `jmp rel32` may be written over it, so
    /// every caller reaches a new version; otherwise why not.
    pub fn redirectable_entry(&self, name: &str) -> std::result::Result<u64, NotRedirectable> {
        let symbol = self
            .symbol(name)
            .filter(|s| s.kind == ExeSymbolKind::Function)
            .ok_or(NotRedirectable::NotUnique)?;
        let aliases = self.names_at.get(&symbol.address).copied().unwrap_or(1);
        if aliases > 1 {
            return Err(NotRedirectable::Aliased { names: aliases });
        }
        let next = self
            .starts
            .partition_point(|&start| start <= symbol.address);
        let room = match self.starts.get(next) {
            Some(start) => start - symbol.address,
            None => symbol.size,
        };
        if room < JMP_LEN {
            return Err(NotRedirectable::TooSmall { room });
        }
        let (text_start, text) = &self.text;
        let code = symbol
            .address
            .checked_sub(*text_start)
            .and_then(|offset| {
                let offset = usize::try_from(offset).ok()?;
                text.get(offset..offset.checked_add(usize::try_from(symbol.size).ok()?)?)
            })
            .ok_or(NotRedirectable::NoCode)?;
        if let Some(from) = branch_into_entry(code, symbol.address) {
            return Err(NotRedirectable::BranchIntoEntry { from });
        }
        Ok(symbol.address)
    }

    /// The `%fs`-relative offset of the executable's thread-local `name`.
    pub fn thread_pointer_offset(&self, name: &str) -> Option<i64> {
        let symbol = self
            .symbol(name)
            .filter(|s| s.kind == ExeSymbolKind::ThreadLocal)?;
        Some(symbol.address as i64 - self.tls_block_size? as i64)
    }
}

/// Whether the executable links the `hotreload` runtime, whose agent then connects by itself:
/// its symbol table defines the agent's constructor static
/// ([`hotreload_abi::protocol::AGENT_STATIC_PATH`]; a plain `cargo build` keeps `.symtab`, and
/// hotpatch's own builds always do).
pub fn links_runtime(path: &Path) -> Result<bool> {
    let data = std::fs::read(path)
        .context(|| format!("could not read the executable {}", path.display()))?;
    let elf = ElfFile64::<object::LittleEndian>::parse(&*data)
        .context(|| format!("{} is not an x86-64 ELF executable", path.display()))?;
    Ok(elf.symbols().any(|symbol| {
        symbol.name().is_ok_and(|name| {
            name.contains("START_AGENT")
                && format!("{:#}", rustc_demangle::demangle(name)) == AGENT_STATIC_PATH
        })
    }))
}

/// The offset of an instruction of the function `code` (starting at `entry`) that would land
/// inside the bytes a redirect overwrites: a jump to `[entry, entry + 5)` (a loop back to the
/// entry: the jump would restart the new version mid-loop, or land mid-instruction), or a call
/// that returns into `(entry, entry + 5)`.
fn branch_into_entry(code: &[u8], entry: u64) -> Option<u64> {
    let overwritten = entry..entry + JMP_LEN;
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        let is_call = instruction.mnemonic() == Mnemonic::Call;
        let target = instruction.near_branch_target();
        let jumps_in = !is_call && target != 0 && overwritten.contains(&target);
        let returns_in =
            is_call && instruction.next_ip() > entry && instruction.next_ip() < entry + JMP_LEN;
        if jumps_in || returns_in {
            return Some(instruction.ip() - entry);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_executable() {
        let exe = BaseExecutable::open(&std::env::current_exe().unwrap()).unwrap();
        assert_eq!(exe.build_id, hotreload::identity::executable().build_id);
        let main = exe.symbol("main").expect("a C `main` symbol");
        assert_eq!(main.kind, ExeSymbolKind::Function);
        assert_eq!(exe.function_at(main.address), Some("main"));
    }

    #[test]
    fn entries_of_this_test_executable() {
        let exe = BaseExecutable::open(&std::env::current_exe().unwrap()).unwrap();
        let main = exe.symbol("main").unwrap();
        assert_eq!(exe.redirectable_entry("main"), Ok(main.address));
        assert_eq!(
            exe.redirectable_entry("no such function"),
            Err(NotRedirectable::NotUnique)
        );
        // std's precompiled code has functions sharing one address (identical code folded).
        let aliased = exe
            .symbols
            .iter()
            .filter(|(_, s)| s.kind == ExeSymbolKind::Function)
            .find(|(_, s)| exe.names_at.get(&s.address).is_some_and(|&n| n > 1));
        let (name, _) = aliased.expect("std links functions sharing an address");
        assert!(matches!(
            exe.redirectable_entry(name),
            Err(NotRedirectable::Aliased { .. })
        ));
    }

    #[test]
    fn a_branch_into_the_first_bytes_is_found() {
        // 0: push rax; 1: nop; 2: nop; 3: jmp 1 (eb fc); 5: ret
        let loop_to_entry_plus_one = [0x50, 0x90, 0x90, 0xeb, 0xfc, 0xc3];
        assert_eq!(branch_into_entry(&loop_to_entry_plus_one, 0x1000), Some(3));
        // 0: call rax (ff d0) — returns to 2, inside the jump.
        let call_at_entry = [0xff, 0xd0, 0x90, 0x90, 0x90, 0xc3];
        assert_eq!(branch_into_entry(&call_at_entry, 0x1000), Some(0));
        // 0: sub rsp, 8; 4: nop; 5: jmp 5 (a loop after the first bytes); 7: call 0 (recursion).
        let fine = [
            0x48, 0x83, 0xec, 0x08, 0x90, 0xeb, 0xfe, 0xe8, 0xf4, 0xff, 0xff, 0xff,
        ];
        assert_eq!(branch_into_entry(&fine, 0x1000), None);
    }
}
