//! Links a patch image: the planned objects, rewritten, linked by the real linker at a fixed
//! address in the executable's link-time coordinates, against the executable's symbols.
//!
//! Every symbol the image uses from the executable is defined *relative to the image's own
//! ELF header* (`NAME = __ehdr_start + OFFSET`, in a linker script), never as an absolute
//! value: rip-relative references then resolve statically and absolute pointers become
//! `R_X86_64_RELATIVE`, so one image serves every run of the executable, whatever its load
//! bias (absolute definitions in a PIE link silently produce wrong code). The base sits a
//! little below the executable: within ±2 GiB of it, away from the heap above it.

use crate::pipeline::link::rewrite::{rewrite_object, BindingContext, BIND_PREFIX};
use crate::pipeline::objects::exe::{BaseExecutable, ExeSymbolKind};
use crate::pipeline::objects::file::with_object;
use crate::pipeline::objects::symbols::is_anonymous;
use linker_shim::{Context, Error, Result, RevisionId};
use object::elf::PT_TLS;
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Object, ObjectSymbol};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::ops::Range;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Where the first patch image goes: 256 MiB below the executable's link-time address 0.
const FIRST_BASE: u64 = 0u64.wrapping_sub(256 << 20);
/// Address space given to each image; image `n` sits `n` windows below the first.
pub const WINDOW: u64 = 16 << 20;
/// Images must stay within rip-relative reach (±2 GiB) of the executable.
const MAX_WINDOWS: u64 = (2048 - 256 - 64) / 16;

/// The fixed link-time base of the `index`-th image of a session.
pub fn image_base(index: u64) -> Result<u64> {
    if index >= MAX_WINDOWS {
        return Err(Error::new(format!(
            "this session used all {MAX_WINDOWS} patch address windows near the executable: restart the program"
        )));
    }
    Ok(FIRST_BASE.wrapping_sub(index * WINDOW))
}

/// The file name of the `index`-th image of a session, linked from `revision`.
pub fn image_file_name(index: u64, revision: &RevisionId) -> String {
    format!("patch-{index}-{revision}.so")
}

/// The index [`image_file_name`] put in `path`'s name.
pub fn image_index(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    name.strip_prefix("patch-")?.split('-').next()?.parse().ok()
}

/// The tools the link needs, found once per session.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// rustc's bundled `ld.lld` (`<sysroot>/lib/rustlib/<host>/bin/gcc-ld/ld.lld`).
    pub lld: PathBuf,
    /// `libc.so.6` and `libgcc_s.so.1`, so calls into them become dynamic relocations.
    pub shared_libraries: Vec<PathBuf>,
}

impl Toolchain {
    /// Finds the linker of `rustc` and the C libraries through `cc`.
    pub fn find(rustc: &Path) -> Result<Toolchain> {
        let output = Command::new(rustc)
            .args(["--print", "sysroot"])
            .output()
            .context(|| format!("could not run {}", rustc.display()))?;
        let sysroot = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        let lld = sysroot.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld");
        if !lld.exists() {
            return Err(Error::new(format!(
                "rustc's linker is missing: {} (is this an x86_64 Linux rustup toolchain?)",
                lld.display()
            )));
        }
        let shared_libraries = ["libc.so.6", "libgcc_s.so.1"]
            .iter()
            .map(|name| {
                let found = Command::new("cc")
                    .arg(format!("-print-file-name={name}"))
                    .output()
                    .context(|| "could not run cc".to_string())?;
                let path = PathBuf::from(String::from_utf8_lossy(&found.stdout).trim());
                if path.is_absolute() {
                    Ok(path)
                } else {
                    Err(Error::new(format!("cc does not know where {name} is")))
                }
            })
            .collect::<Result<_>>()?;
        Ok(Toolchain {
            lld,
            shared_libraries,
        })
    }
}

/// Everything one image link needs.
pub struct ImageRequest<'a> {
    pub exe: &'a BaseExecutable,
    /// All objects of the new revision (to find definitions of anonymous data).
    pub all_objects: &'a [PathBuf],
    /// The planned objects.
    pub objects: &'a BTreeSet<PathBuf>,
    /// Names the image defines afresh: never bound to the executable's copy.
    pub relinked: &'a BTreeSet<String>,
    /// Functions the program will be pointed at (slot implementations and redirected
    /// functions): kept, made global, their addresses reported.
    pub entry_points: &'a BTreeSet<String>,
    /// Data added by earlier, still-mapped patches: name → link-time address.
    pub earlier_patch_data: &'a HashMap<String, u64>,
    pub base: u64,
    /// Scratch directory for the rewritten objects and the script.
    pub work_dir: &'a Path,
    pub output: &'a Path,
}

/// A linked image.
#[derive(Debug, Clone)]
pub struct LinkedImage {
    pub path: PathBuf,
    /// Link-time code of each entry point: `[address, address + size)`.
    pub entries: BTreeMap<String, Range<u64>>,
    /// Data symbols the image defines (for later patches to bind to), with addresses.
    pub data: HashMap<String, u64>,
    /// `hotreload_abi::protocol::checksum` of the file, for the runtime to verify.
    pub checksum: u64,
    pub duration: Duration,
}

/// Rewrites the objects, writes the binding script and runs the linker.
pub fn link_image(request: &ImageRequest<'_>, toolchain: &Toolchain) -> Result<LinkedImage> {
    let started = Instant::now();
    std::fs::create_dir_all(request.work_dir)
        .context(|| format!("could not create {}", request.work_dir.display()))?;
    let objects = objects_with_anonymous_dependencies(request)?;
    let entry_points: HashSet<String> = request.entry_points.iter().cloned().collect();
    let context = BindingContext {
        exe: request.exe,
        earlier_patch_data: request.earlier_patch_data,
        entry_points: &entry_points,
    };
    let mut bindings: BTreeMap<String, u64> = BTreeMap::new();
    let mut inputs = Vec::new();
    for (index, object) in objects.iter().enumerate() {
        let rewritten = request.work_dir.join(format!("{index:03}.o"));
        bindings.extend(rewrite_object(object, &rewritten, &context)?);
        bindings.extend(global_bindings(&rewritten, request)?);
        inputs.push(rewritten);
    }
    let script = request.work_dir.join("bind.ld");
    std::fs::write(&script, binding_script(&bindings, request.base))
        .context(|| format!("could not write {}", script.display()))?;

    let partial = request.output.with_extension("partial");
    let mut command = Command::new(&toolchain.lld);
    command
        .arg("-pie")
        .arg(format!("--image-base={:#x}", request.base))
        .args([
            // PT_GNU_RELRO: the runtime makes the relocated GOT and pointer tables read-only.
            "-z",
            "relro",
            "-z",
            "max-page-size=4096",
            "-z",
            "noexecstack",
            "--hash-style=gnu",
            "--gc-sections",
        ])
        .arg("-o")
        .arg(&partial);
    if let Some(first) = request.entry_points.first() {
        command.arg(format!("--entry={first}"));
    }
    for entry_point in request.entry_points {
        command.arg(format!("--undefined={entry_point}"));
    }
    command
        .args(&inputs)
        .arg(&script)
        .args(&toolchain.shared_libraries);
    let output = command
        .output()
        .context(|| format!("could not run the linker {}", toolchain.lld.display()))?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&partial);
        return Err(Error::new(format!(
            "linking the patch failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim_end()
        )));
    }
    let mut image = inspect(&partial, request)?;
    // The runtime maps only images no one else can write, whatever the user's umask.
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o600))
        .context(|| format!("could not protect {}", partial.display()))?;
    std::fs::rename(&partial, request.output)
        .context(|| format!("could not write {}", request.output.display()))?;
    image.path = request.output.to_path_buf();
    image.duration = started.elapsed();
    Ok(image)
}

/// The planned objects plus the objects defining anonymous data they refer to. Anonymous
/// names (`anon.<hash>.N`, `alloc_…`) are numbered per build, so they are never bound to the
/// executable by name: their definitions come along instead.
fn objects_with_anonymous_dependencies(request: &ImageRequest<'_>) -> Result<Vec<PathBuf>> {
    let mut definers: Option<HashMap<String, PathBuf>> = None;
    let mut chosen: Vec<PathBuf> = request.objects.iter().cloned().collect();
    let mut seen: HashSet<PathBuf> = chosen.iter().cloned().collect();
    let mut next = 0;
    while next < chosen.len() {
        let needed = with_object(&chosen[next], |file| {
            let mut needed = Vec::new();
            for symbol in file.symbols().filter(|s| s.is_undefined()) {
                let Ok(name) = symbol.name() else { continue };
                if !is_anonymous(name) {
                    continue;
                }
                let definers = match &mut definers {
                    Some(map) => map,
                    None => definers.insert(defining_objects(request.all_objects)?),
                };
                needed.extend(definers.get(name).cloned());
            }
            Ok(needed)
        })?;
        for object in needed {
            if seen.insert(object.clone()) {
                chosen.push(object);
            }
        }
        next += 1;
    }
    Ok(chosen)
}

/// Which object defines each global symbol.
fn defining_objects(objects: &[PathBuf]) -> Result<HashMap<String, PathBuf>> {
    let mut map = HashMap::new();
    for path in objects {
        with_object(path, |file| {
            for symbol in file
                .symbols()
                .filter(|s| s.is_global() && s.is_definition())
            {
                if let Ok(name) = symbol.name() {
                    map.insert(name.to_string(), path.clone());
                }
            }
            Ok(())
        })?;
    }
    Ok(map)
}

/// Global names the rewritten object uses or defines that must be the executable's (or an
/// earlier patch's) instance: everything named that the image does not define afresh.
fn global_bindings(object: &Path, request: &ImageRequest<'_>) -> Result<BTreeMap<String, u64>> {
    with_object(object, |file| Ok(global_bindings_of(file, request)))
}

fn global_bindings_of(
    file: &object::File<'_>,
    request: &ImageRequest<'_>,
) -> BTreeMap<String, u64> {
    let mut bindings = BTreeMap::new();
    for symbol in file.symbols().filter(|s| s.is_global()) {
        let Ok(name) = symbol.name() else { continue };
        if name.is_empty()
            || name.starts_with(BIND_PREFIX)
            || is_anonymous(name)
            || request.relinked.contains(name)
        {
            continue;
        }
        let address = match request.exe.symbol(name) {
            Some(s) if s.kind != ExeSymbolKind::ThreadLocal => Some(s.address),
            Some(_) => None,
            None => request.earlier_patch_data.get(name).copied(),
        };
        if let Some(address) = address {
            bindings.insert(name.to_string(), address);
        }
    }
    bindings
}

/// The linker script: each binding relative to the image's ELF header, and a zero
/// terminator after `.eh_frame` (lld writes none; `__register_frame` needs it).
fn binding_script(bindings: &BTreeMap<String, u64>, base: u64) -> String {
    let mut script = String::new();
    for (name, address) in bindings {
        let offset = address.wrapping_sub(base);
        let _ = writeln!(script, "\"{name}\" = __ehdr_start + {offset:#x};");
    }
    script.push_str("SECTIONS { .eh_frame_terminator : { LONG(0) } } INSERT AFTER .eh_frame;\n");
    script
}

/// Reads back what the image defines and checks it is loadable.
fn inspect(path: &Path, request: &ImageRequest<'_>) -> Result<LinkedImage> {
    let data = std::fs::read(path).context(|| format!("could not read {}", path.display()))?;
    let elf = ElfFile64::<object::LittleEndian>::parse(&*data)
        .context(|| format!("the linker wrote an unreadable {}", path.display()))?;
    let endian = elf.endian();
    let mut low = u64::MAX;
    let mut high = 0;
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == PT_TLS {
            return Err(Error::new("the patch would need thread-local storage of its own (a new `thread_local!`?): restart the program"));
        }
        if header.p_type(endian) == object::elf::PT_LOAD {
            low = low.min(header.p_vaddr(endian));
            high = high.max(header.p_vaddr(endian) + header.p_memsz(endian));
        }
    }
    let span = high.saturating_sub(low);
    if span > WINDOW {
        return Err(Error::new(format!("the patch image spans {span} bytes, more than its {WINDOW}-byte window: restart the program")));
    }
    let (entry_points, data_symbols) = defined_symbols(&elf, request.exe, |name, _| {
        request.entry_points.contains(name)
    });
    if let Some(missing) = request
        .entry_points
        .iter()
        .find(|r| !entry_points.contains_key(*r))
    {
        return Err(Error::new(format!(
            "the linked patch lacks `{}`",
            crate::pipeline::diff::demangle(missing)
        )));
    }
    Ok(LinkedImage {
        path: path.to_path_buf(),
        entries: entry_points,
        data: data_symbols,
        checksum: hotreload_abi::protocol::checksum(&data),
        duration: Duration::ZERO,
    })
}

/// What an image defines: the functions `is_entry` picks (their link-time code ranges) and
/// the data later patches may bind to (data of its own, not the executable's), with link-time
/// addresses.
fn defined_symbols(
    elf: &ElfFile64<'_, object::LittleEndian>,
    exe: &BaseExecutable,
    is_entry: impl Fn(&str, &object::read::elf::ElfSymbol64<'_, '_, object::LittleEndian>) -> bool,
) -> (BTreeMap<String, Range<u64>>, HashMap<String, u64>) {
    let mut entries = BTreeMap::new();
    let mut data = HashMap::new();
    for symbol in elf.symbols().filter(|s| s.is_definition()) {
        let Ok(name) = symbol.name() else { continue };
        if is_entry(name, &symbol) {
            let start = symbol.address();
            entries.insert(name.to_string(), start..start + symbol.size());
        } else if symbol.kind() == object::SymbolKind::Data
            && exe.symbol(name).is_none()
            && !is_anonymous(name)
        {
            data.insert(name.to_string(), symbol.address());
        }
    }
    (entries, data)
}

/// An image an earlier `hotpatch` had the program map, read back when another attaches.
#[derive(Debug, Clone)]
pub struct MappedImage {
    /// Link-time code of each global function that is also the executable's: every copy a
    /// pointer may have been taken to.
    pub functions: BTreeMap<String, Range<u64>>,
    /// Data symbols it defines (for later patches to bind to), with addresses.
    pub data: HashMap<String, u64>,
}

/// Reads what the image at `path` defines.
pub fn read_mapped_image(path: &Path, exe: &BaseExecutable) -> Result<MappedImage> {
    let bytes = std::fs::read(path).context(|| format!("could not read {}", path.display()))?;
    let elf = ElfFile64::<object::LittleEndian>::parse(&*bytes)
        .context(|| format!("{} is no patch image", path.display()))?;
    let (functions, data) = defined_symbols(&elf, exe, |name, symbol| {
        symbol.is_global()
            && symbol.kind() == object::SymbolKind::Text
            && exe.symbol(name).is_some()
    });
    Ok(MappedImage { functions, data })
}
