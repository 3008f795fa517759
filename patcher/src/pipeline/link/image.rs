//! Links a patch image: the planned objects, rewritten, linked by the real linker at a fixed
//! address in the executable's link-time coordinates, against the executable's symbols.
//!
//! Every symbol the image uses from the executable is defined *relative to the image's own
//! ELF header* (`NAME = __ehdr_start + OFFSET`, in a linker script), never as an absolute
//! value: rip-relative references then resolve statically and absolute pointers become
//! `R_X86_64_RELATIVE`, so one image serves every run of the executable, whatever its load
//! bias (absolute definitions in a PIE link silently produce wrong code). Images are packed
//! below the executable ([`ImageSpace`]): within ±2 GiB of it, away from the heap above it.

use crate::pipeline::link::rewrite::{rewrite_object, BindingContext, BIND_PREFIX};
use crate::pipeline::objects::exe::{BaseExecutable, ExeSymbolKind};
use crate::pipeline::objects::file::with_object;
use crate::pipeline::objects::symbols::{canonical_name, is_anonymous};
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

/// How far a `rel32` displacement reaches either way (it is signed 32-bit, from the end of
/// the instruction).
const REL32_REACH: i64 = 1 << 31;
/// Images end at least this far below the executable: the margin the first image always
/// kept from it.
const GAP_BELOW_EXE: i64 = 256 << 20;
/// Images are placed on page boundaries (the linker's `max-page-size`, the runtime's page).
const PAGE: i64 = 4096;
/// An unmapped page between two images: a stray access past one image's end faults instead
/// of landing in the next one.
const GUARD: i64 = PAGE;

/// The address space patch images are packed into, in the executable's link-time
/// coordinates: below the executable, every byte within rel32 reach of every byte of it both
/// ways (entry jumps in the executable reach image code; image code reaches the executable's
/// functions and statics rip-relative), so no image needs its own window. An image's size is
/// known only once it is linked, so images grow upward from the lowest such address: each is
/// linked at the end of the previous one (plus a guard page) and kept if it ends below the
/// ceiling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageSpace {
    /// The lowest address an image may use.
    floor: i64,
    /// Images end at or below this.
    ceiling: i64,
    /// Where the next image is linked.
    next: i64,
    /// Images placed so far, for the message when the space is full.
    placed: u64,
}

impl ImageSpace {
    /// The space below an executable whose segments span the link-time addresses `exe`.
    pub fn below(exe: &Range<u64>) -> ImageSpace {
        // The lowest page from which the executable's last byte is less than the reach away.
        let floor = align_up(exe.end as i64 - REL32_REACH + 1);
        ImageSpace {
            floor,
            ceiling: exe.start as i64 - GAP_BELOW_EXE,
            next: floor,
            placed: 0,
        }
    }

    /// The base the next image is linked at.
    pub fn next_base(&self) -> u64 {
        self.next as u64
    }

    /// Claims the space of the image linked at [`ImageSpace::next_base`] and ending (its last
    /// segment's end) at `end`; refused, with the numbers, when it does not fit below the
    /// ceiling.
    pub fn claim(&mut self, end: u64) -> Result<()> {
        let end = end as i64;
        if end > self.ceiling {
            const MIB: i64 = 1 << 20;
            return Err(Error::new(format!(
                "the patch address space near the executable is full: {} images use {} of its {} MiB, and the next one needs {} KiB more than is left: restart the program",
                self.placed,
                (self.next.min(self.ceiling) - self.floor) / MIB,
                (self.ceiling - self.floor).max(0) / MIB,
                (end - self.ceiling + 1023) / 1024
            )));
        }
        self.next = align_up(end) + GUARD;
        self.placed += 1;
        Ok(())
    }
}

fn align_up(address: i64) -> i64 {
    (address + PAGE - 1) & !(PAGE - 1)
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
    /// Data symbols the image defines (for later patches to bind to), by canonical name,
    /// with addresses.
    pub data: HashMap<String, u64>,
    /// `hotreload_abi::protocol::checksum` of the file, for the runtime to verify.
    pub checksum: u64,
    /// Link-time address just past its last segment.
    pub end: u64,
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
            || request.relinked.contains(canonical_name(name))
        {
            continue;
        }
        // Bound under the object's own spelling: a release build's `f.llvm.<hash>` is
        // defined at the executable's `f.llvm.<other hash>`.
        let address = match request.exe.symbol(name) {
            Some(s) if s.kind != ExeSymbolKind::ThreadLocal => Some(s.address),
            Some(_) => None,
            None => request
                .earlier_patch_data
                .get(canonical_name(name))
                .copied(),
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
    let mut end = 0;
    for header in elf.elf_program_headers() {
        if header.p_type(endian) == PT_TLS {
            return Err(Error::new("the patch would need thread-local storage of its own (a new `thread_local!`?): restart the program"));
        }
        if header.p_type(endian) == object::elf::PT_LOAD {
            end = end.max(header.p_vaddr(endian).wrapping_add(header.p_memsz(endian)));
        }
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
        end,
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
            data.insert(canonical_name(name).to_string(), symbol.address());
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
    /// Data symbols it defines (for later patches to bind to), by canonical name, with
    /// addresses.
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

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    /// A 20 MiB executable at link-time address 0, as PIE executables are linked.
    const EXE: Range<u64> = 0..20 * MIB + 123;

    fn signed(address: u64) -> i64 {
        address as i64
    }

    #[test]
    fn the_first_image_starts_at_the_lowest_address_still_in_reach_of_the_executable() {
        let space = ImageSpace::below(&EXE);
        let base = signed(space.next_base());
        assert_eq!(base % PAGE, 0);
        // From the image's first byte to the executable's last, and back: within rel32.
        assert!(signed(EXE.end) - base < REL32_REACH);
        assert!(
            signed(EXE.end) - (base - PAGE) >= REL32_REACH,
            "no lower page is"
        );
    }

    #[test]
    fn a_bigger_executable_raises_the_floor() {
        let small = ImageSpace::below(&EXE).next_base();
        let big = ImageSpace::below(&(0..EXE.end + 100 * MIB)).next_base();
        assert_eq!(big - small, 100 * MIB);
    }

    #[test]
    fn each_image_follows_the_previous_one_after_a_guard_page() {
        let mut space = ImageSpace::below(&EXE);
        let first = space.next_base();
        space.claim(first + 5000).unwrap();
        let second = space.next_base();
        assert_eq!(
            second,
            first + 2 * 4096 + 4096,
            "5000 bytes take 2 pages, then the guard"
        );
        space.claim(second + 4096).unwrap();
        assert_eq!(space.next_base(), second + 2 * 4096);
    }

    #[test]
    fn images_fill_the_space_up_to_the_ceiling_and_no_further() {
        let mut space = ImageSpace::below(&EXE);
        let ceiling = 0u64.wrapping_sub(256 * MIB);
        let mut images = 0u64;
        while space.next_base() + 4096 <= ceiling {
            space.claim(space.next_base() + 4096).unwrap();
            images += 1;
        }
        // 4 KiB images, each with its guard page: (2 GiB − 20 MiB − 256 MiB) / 8 KiB of them,
        // give or take the pages rounding takes.
        assert!(
            images.abs_diff((2048 - 20 - 256) * MIB / 8192) <= 1,
            "{images}"
        );
        let refused = space
            .claim(space.next_base() + 8192)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains(&format!("{images} images use 1771 of its 1771 MiB"))
                && refused.contains("restart the program"),
            "{refused}"
        );
    }

    #[test]
    fn an_image_ending_exactly_at_the_ceiling_fits() {
        let mut space = ImageSpace::below(&EXE);
        let ceiling = 0u64.wrapping_sub(256 * MIB);
        assert!(space.clone().claim(ceiling + 1).is_err());
        space.claim(ceiling).unwrap();
    }
}
