//! Maps a patch image into this process, by hand, at the address it was linked for.
//!
//! The patcher links each patch as a position-independent ELF image whose addresses are in
//! the *executable's link-time coordinates* (a little below the executable), so one file
//! serves every run: each `PT_LOAD` goes to `load_bias + p_vaddr`, never anywhere else,
//! because the patch reaches the executable's functions and statics rip-relative.
//! `dlopen` can't do that (it picks the address and caches by path), hence this loader.
//!
//! Everything that can be refused is checked before the first byte is mapped: the file's
//! owner and mode, the ELF header, the segment layout, every relocation (type, place, symbol
//! resolved) and the `.eh_frame` terminator. Only then is the range reserved with
//! `MAP_FIXED_NOREPLACE` (never over an existing mapping), filled, relocated, protected
//! (`PT_GNU_RELRO` read-only once relocated) and its `.eh_frame` registered with libgcc so panics unwind through patched frames.
//! Protections go through `region::protect`; the reservation is a plain `mmap`, because
//! `region::alloc_at` uses `MAP_FIXED`, which would silently replace whatever is mapped there.
//!
//! The image is described by its section headers (lld always writes them): `.rela.dyn` and
//! `.rela.plt` are the allocated `SHT_RELA` sections, `.eh_frame` is found by name. No
//! initialisers (`DT_INIT`, `.init_array`) are run: a patch holds functions, not a program.

use object::elf::{
    FileHeader64, EM_X86_64, ET_DYN, PF_R, PF_W, PF_X, PT_GNU_RELRO, PT_LOAD, PT_TLS, R_X86_64_64,
    R_X86_64_GLOB_DAT, R_X86_64_JUMP_SLOT, R_X86_64_NONE, R_X86_64_RELATIVE, SHF_ALLOC, SHN_UNDEF,
    SHT_REL, SHT_RELA, SHT_RELR, STB_WEAK,
};
use object::read::elf::{
    ElfFile64, FileHeader, ProgramHeader, Rela, SectionHeader, Sym, SymbolTable,
};
use object::{LittleEndian, SymbolIndex};
use std::ffi::{c_void, CString};
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

extern "C" {
    /// libgcc: adds an `.eh_frame` (a zero-terminated list of CIEs and FDEs) to the frames
    /// the unwinder searches before it asks `dl_iterate_phdr`.
    fn __register_frame(eh_frame: *const u8);
    /// libgcc: removes a list added by `__register_frame` (aborts if it was never added).
    fn __deregister_frame(eh_frame: *const u8);
}

const ENDIAN: LittleEndian = LittleEndian;

/// A patch image mapped into this process.
///
/// Dropping it leaves the image mapped and registered on purpose: slots or threads may still
/// run its code. Only [`LoadedImage::unload`] frees it.
#[derive(Debug)]
pub struct LoadedImage {
    path: PathBuf,
    range: Range<u64>,
    registered_eh_frame: Option<u64>,
}

impl LoadedImage {
    /// The runtime addresses the image occupies (page-aligned).
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// The file the image was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deregisters the image's `.eh_frame` and unmaps it.
    ///
    /// # Safety
    /// Nothing may use the image any more: no slot or function pointer points into it, no
    /// thread executes or will return into its code, no reference to its data is alive.
    pub unsafe fn unload(self) -> io::Result<()> {
        if let Some(eh_frame) = self.registered_eh_frame {
            // SAFETY: `eh_frame` was passed to `__register_frame` by `load` and not yet
            // deregistered (`self` is consumed); its bytes are still mapped.
            unsafe { __deregister_frame(eh_frame as *const u8) };
        }
        let length = (self.range.end - self.range.start) as usize;
        // SAFETY: the range was mapped by `load` for this image alone, and the caller
        // guarantees nothing uses it any more.
        if unsafe { libc::munmap(self.range.start as *mut c_void, length) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Why an image was not loaded. Nothing was mapped or registered.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be opened or read.
    Io { path: PathBuf, error: io::Error },
    /// Not a regular file (directory, FIFO, device, symbolic link…).
    NotARegularFile { path: PathBuf },
    /// Owned by another user than the one this process runs as.
    ForeignOwner {
        path: PathBuf,
        owner: u32,
        process: u32,
    },
    /// Group or others may write it, so someone else could have put code in it.
    WritableByOthers { path: PathBuf, mode: u32 },
    /// The bytes are not the ones the patcher wrote (truncated or damaged).
    ChecksumMismatch {
        path: PathBuf,
        expected: u64,
        actual: u64,
        length: usize,
    },
    /// Not a well-formed ELF64 x86_64 `ET_DYN` image, or its contents don't add up.
    Malformed { path: PathBuf, reason: String },
    /// Well-formed, but asks for something this loader does not do.
    Unsupported { path: PathBuf, reason: String },
    /// A relocation names a symbol that this process does not define.
    UnresolvedSymbol { path: PathBuf, name: String },
    /// Something is already mapped where the image must go.
    RangeTaken { path: PathBuf, range: Range<u64> },
    /// The kernel refused a mapping or protection change.
    Memory {
        path: PathBuf,
        action: &'static str,
        error: io::Error,
    },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io { path, error } => {
                write!(f, "patch image {}: cannot read it: {error}", path.display())
            }
            LoadError::NotARegularFile { path } => {
                write!(f, "patch image {} is not a regular file", path.display())
            }
            LoadError::ForeignOwner {
                path,
                owner,
                process,
            } => write!(
                f,
                "patch image {} is owned by uid {owner}, but this program runs as uid {process}: refused",
                path.display()
            ),
            LoadError::WritableByOthers { path, mode } => write!(
                f,
                "patch image {} has mode {:o}: writable by group or others, refused",
                path.display(),
                mode & 0o7777
            ),
            LoadError::ChecksumMismatch { path, expected, actual, length } => write!(
                f,
                "patch image {} is truncated or damaged: checksum {actual:#018x} of its {length} bytes, expected {expected:#018x}",
                path.display()
            ),
            LoadError::Malformed { path, reason } => {
                write!(f, "patch image {} is corrupt: {reason}", path.display())
            }
            LoadError::Unsupported { path, reason } => {
                write!(f, "patch image {} is not loadable: {reason}", path.display())
            }
            LoadError::UnresolvedSymbol { path, name } => write!(
                f,
                "patch image {} needs symbol `{name}`, which this process does not define",
                path.display()
            ),
            LoadError::RangeTaken { path, range } => write!(
                f,
                "patch image {}: address range {:#x}..{:#x} is no longer free (restart `hotpatch run`)",
                path.display(),
                range.start,
                range.end
            ),
            LoadError::Memory {
                path,
                action,
                error,
            } => write!(f, "patch image {}: {action} failed: {error}", path.display()),
        }
    }
}

impl std::error::Error for LoadError {}

/// Checks, maps, relocates, protects and registers the image at `path`, placing each
/// segment at `load_bias + p_vaddr` (`load_bias`: the executable's, see
/// [`crate::identity::executable`]).
///
/// The image's code is trusted once the file passes the ownership checks: it will run.
/// `checksum` is the [`crate::protocol::checksum`] the patcher computed when it wrote the file.
pub fn load(path: &Path, load_bias: u64, checksum: u64) -> Result<LoadedImage, LoadError> {
    let bytes = read_trusted_file(path)?;
    let actual = crate::protocol::checksum(&bytes);
    if actual != checksum {
        return Err(LoadError::ChecksumMismatch {
            path: path.to_path_buf(),
            expected: checksum,
            actual,
            length: bytes.len(),
        });
    }
    let plan = Plan::new(&bytes, load_bias).map_err(|refusal| refusal.at(path))?;
    let range = plan.runtime(plan.span.start)..plan.runtime(plan.span.end);
    let length = (range.end - range.start) as usize;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: the kernel either maps
    // fresh anonymous memory at exactly `range.start` or fails (or, before Linux 4.17,
    // treats the address as a hint, handled below). No existing memory is touched.
    let mapped = unsafe {
        libc::mmap(
            range.start as *mut c_void,
            length,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_FIXED_NOREPLACE | libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if mapped == libc::MAP_FAILED {
        let error = io::Error::last_os_error();
        return Err(if error.raw_os_error() == Some(libc::EEXIST) {
            LoadError::RangeTaken {
                path: path.to_owned(),
                range,
            }
        } else {
            LoadError::Memory {
                path: path.to_owned(),
                action: "reserving the address range",
                error,
            }
        });
    }
    if mapped as u64 != range.start {
        // An old kernel took the address as a hint and mapped elsewhere: give that back.
        // SAFETY: `mapped` is the fresh mapping just made, unknown to anyone else.
        unsafe { libc::munmap(mapped, length) };
        return Err(LoadError::RangeTaken {
            path: path.to_owned(),
            range,
        });
    }
    let image = LoadedImage {
        path: path.to_owned(),
        range,
        registered_eh_frame: None,
    };
    // SAFETY: the range is our fresh read-write mapping, and `Plan::new` checked that every
    // segment and relocation lies inside it.
    unsafe { plan.fill() };
    // SAFETY: the range is ours; nothing runs in it yet, so changing protections is safe.
    if let Err(error) = unsafe { plan.protect() } {
        // SAFETY: nothing has seen the image yet.
        let _ = unsafe { image.unload() };
        return Err(LoadError::Memory {
            path: path.to_owned(),
            action: "setting page protections",
            error,
        });
    }
    let registered_eh_frame = plan.eh_frame.map(|vaddr| {
        let address = plan.runtime(vaddr);
        // SAFETY: `Plan::new` checked that a well-formed, zero-terminated list of CIE/FDE
        // records starts at `vaddr`; it is mapped readable from now until `unload`.
        unsafe { __register_frame(address as *const u8) };
        address
    });
    Ok(LoadedImage {
        registered_eh_frame,
        ..image
    })
}

/// Opens `path` without following a final symlink or blocking on a FIFO, checks the opened
/// file's owner and mode (no window for a swap in between), then reads it whole.
fn read_trusted_file(path: &Path) -> Result<Vec<u8>, LoadError> {
    let io_error = |error| LoadError::Io {
        path: path.to_owned(),
        error,
    };
    let mut file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|error| match error.raw_os_error() {
            Some(libc::ELOOP) => LoadError::NotARegularFile {
                path: path.to_owned(),
            },
            _ => io_error(error),
        })?;
    let metadata = file.metadata().map_err(io_error)?;
    if !metadata.is_file() {
        return Err(LoadError::NotARegularFile {
            path: path.to_owned(),
        });
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let process = unsafe { libc::geteuid() };
    if metadata.uid() != process {
        return Err(LoadError::ForeignOwner {
            path: path.to_owned(),
            owner: metadata.uid(),
            process,
        });
    }
    if metadata.mode() & 0o022 != 0 {
        return Err(LoadError::WritableByOthers {
            path: path.to_owned(),
            mode: metadata.mode(),
        });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.read_to_end(&mut bytes).map_err(io_error)?;
    Ok(bytes)
}

/// A refusal found while planning, before the file's path is attached.
#[derive(Debug, PartialEq, Eq)]
enum Refusal {
    Malformed(String),
    Unsupported(String),
    UnresolvedSymbol(String),
}

impl Refusal {
    fn at(self, path: &Path) -> LoadError {
        let path = path.to_owned();
        match self {
            Refusal::Malformed(reason) => LoadError::Malformed { path, reason },
            Refusal::Unsupported(reason) => LoadError::Unsupported { path, reason },
            Refusal::UnresolvedSymbol(name) => LoadError::UnresolvedSymbol { path, name },
        }
    }
}

fn malformed(reason: impl fmt::Display) -> Refusal {
    Refusal::Malformed(reason.to_string())
}

/// One `PT_LOAD` segment: where it goes (link-time address), what it holds, how it's protected.
struct Segment<'data> {
    vaddr: u64,
    memory_size: u64,
    file_bytes: &'data [u8],
    protection: region::Protection,
}

impl<'data> Segment<'data> {
    /// The end of the segment in memory. `segments` refuses a segment for which this, or this
    /// rounded up to a page, would overflow.
    fn end(&self) -> u64 {
        self.vaddr + self.memory_size
    }

    /// Link-time addresses of the pages the segment touches.
    fn pages(&self, page: u64) -> Range<u64> {
        align_down(self.vaddr, page)..align_up(self.end(), page)
    }

    /// Whether `size` bytes at `vaddr` lie inside the segment (without overflowing).
    fn contains(&self, vaddr: u64, size: u64) -> bool {
        vaddr >= self.vaddr && vaddr.checked_add(size).is_some_and(|end| end <= self.end())
    }

    /// The file bytes the segment loads at `size` bytes from `vaddr`; `None` if some of them
    /// lie outside the segment or in its zero-filled tail.
    fn file_slice(&self, vaddr: u64, size: u64) -> Option<&'data [u8]> {
        if !self.contains(vaddr, size) {
            return None;
        }
        let start = usize::try_from(vaddr - self.vaddr).ok()?;
        let end = start.checked_add(usize::try_from(size).ok()?)?;
        self.file_bytes.get(start..end)
    }

    /// The byte the segment will hold at `vaddr` once loaded (file bytes, then zeros).
    fn loaded_byte(&self, vaddr: u64) -> u8 {
        let offset = (vaddr - self.vaddr) as usize;
        self.file_bytes.get(offset).copied().unwrap_or(0)
    }
}

/// Everything `load` will do, worked out from the file alone so that it can be refused
/// before anything is mapped. Addresses are link-time addresses.
struct Plan<'data> {
    /// The executable's load bias, added to every link-time address.
    load_bias: u64,
    /// Page-aligned span of all segments.
    span: Range<u64>,
    segments: Vec<Segment<'data>>,
    /// Resolved relocations: (place as a link-time address, final 8-byte value to store).
    stores: Vec<(u64, u64)>,
    /// Start of a zero-terminated `.eh_frame`, if the image has one.
    eh_frame: Option<u64>,
    /// Pages of `PT_GNU_RELRO` and the protection they get once relocated (see [`relro`]).
    relro: Option<(Range<u64>, region::Protection)>,
}

impl<'data> Plan<'data> {
    fn new(bytes: &'data [u8], load_bias: u64) -> Result<Plan<'data>, Refusal> {
        let elf = ElfFile64::<LittleEndian>::parse(bytes)
            .map_err(|error| malformed(format!("not an ELF64 little-endian file ({error})")))?;
        let header = elf.elf_header();
        if header.e_machine(ENDIAN) != EM_X86_64 {
            return Err(malformed(format!(
                "machine {} is not x86_64",
                header.e_machine(ENDIAN)
            )));
        }
        if header.e_type(ENDIAN) != ET_DYN {
            return Err(malformed(format!(
                "ELF type {} is not ET_DYN (a position-independent image)",
                header.e_type(ENDIAN)
            )));
        }
        let segments = segments(&elf, bytes)?;
        let page = region::page::size() as u64;
        // Sorted and disjoint (checked by `segments`): the last one ends last.
        let (first, last) = (&segments[0], &segments[segments.len() - 1]);
        let span = align_down(first.vaddr, page)..align_up(last.vaddr + last.memory_size, page);
        let runtime_start = load_bias.wrapping_add(span.start);
        if runtime_start.checked_add(span.end - span.start).is_none() {
            return Err(malformed(format!(
                "span {:#x}..{:#x} wraps around the address space at load bias {load_bias:#x}",
                span.start, span.end
            )));
        }
        Ok(Plan {
            load_bias,
            stores: relocation_stores(&elf, bytes, &segments, load_bias)?,
            eh_frame: terminated_eh_frame(&elf, &segments)?,
            relro: relro(&elf, &segments)?,
            span,
            segments,
        })
    }

    /// Where a link-time address is at run time. Wrapping: images usually sit at "negative"
    /// link-time addresses, below the executable; `new` checked the span does not wrap.
    fn runtime(&self, vaddr: u64) -> u64 {
        self.load_bias.wrapping_add(vaddr)
    }

    /// Copies each segment's file bytes and applies the relocation stores.
    ///
    /// # Safety
    /// The span's runtime range must be this image's fresh, writable mapping.
    unsafe fn fill(&self) {
        for segment in &self.segments {
            let destination = self.runtime(segment.vaddr) as *mut u8;
            // SAFETY: the segment lies inside the span (checked by `segments`), which the
            // caller guarantees is our writable mapping; the source is the file buffer.
            // The bss part (memory_size > file size) stays as mmap left it: zero.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    segment.file_bytes.as_ptr(),
                    destination,
                    segment.file_bytes.len(),
                )
            };
        }
        for &(place, value) in &self.stores {
            // SAFETY: `relocation_stores` checked that 8 bytes at `place` lie inside a
            // segment, hence inside our mapping; relocated words need not be aligned.
            unsafe { (self.runtime(place) as *mut u64).write_unaligned(value) };
        }
    }

    /// Gives every segment its protection from `p_flags`, then takes write permission from
    /// the relocated read-only data (`PT_GNU_RELRO`); gaps between segments get none.
    ///
    /// # Safety
    /// The span's runtime range must be this image's mapping, with no code running in it.
    unsafe fn protect(&self) -> io::Result<()> {
        let page = region::page::size() as u64;
        let start = self.runtime(self.span.start) as *const u8;
        let length = (self.span.end - self.span.start) as usize;
        let to_io = |error: region::Error| io::Error::other(error.to_string());
        // SAFETY: the caller guarantees the span is our mapping and unused.
        unsafe { region::protect(start, length, region::Protection::NONE) }.map_err(to_io)?;
        for segment in &self.segments {
            let pages = segment.pages(page);
            let address = self.runtime(pages.start) as *const u8;
            // SAFETY: the segment's pages lie inside the span and belong to it alone
            // (`segments` refuses segments that share a page).
            unsafe {
                region::protect(
                    address,
                    (pages.end - pages.start) as usize,
                    segment.protection,
                )
            }
            .map_err(to_io)?;
        }
        if let Some((pages, protection)) = &self.relro {
            // SAFETY: `relro` checked the pages lie inside one segment's pages, which are
            // this image's alone; the caller guarantees nothing runs in it yet.
            unsafe {
                region::protect(
                    self.runtime(pages.start) as *const u8,
                    (pages.end - pages.start) as usize,
                    *protection,
                )
            }
            .map_err(to_io)?;
        }
        Ok(())
    }
}

fn align_down(value: u64, alignment: u64) -> u64 {
    value & !(alignment - 1)
}

fn align_up(value: u64, alignment: u64) -> u64 {
    align_down(value + (alignment - 1), alignment)
}

/// The `PT_LOAD` segments in address order, each checked against the file and the others.
fn segments<'data>(
    elf: &ElfFile64<'data, LittleEndian>,
    bytes: &'data [u8],
) -> Result<Vec<Segment<'data>>, Refusal> {
    let page = region::page::size() as u64;
    let mut segments = Vec::new();
    for header in elf.elf_program_headers() {
        match header.p_type(ENDIAN) {
            PT_TLS => {
                return Err(Refusal::Unsupported(
                    "it has a PT_TLS segment (thread-locals of its own); patches must use the program's".into(),
                ))
            }
            PT_LOAD => {}
            _ => continue,
        }
        let (vaddr, memory_size) = (header.p_vaddr(ENDIAN), header.p_memsz(ENDIAN));
        let file_bytes = header.data(ENDIAN, bytes).map_err(|()| {
            malformed(format!(
                "PT_LOAD at {vaddr:#x} wants file bytes {:#x}+{:#x}, the file has {:#x} (truncated?)",
                header.p_offset(ENDIAN),
                header.p_filesz(ENDIAN),
                bytes.len()
            ))
        })?;
        if file_bytes.len() as u64 > memory_size
            || vaddr
                .checked_add(memory_size)
                .and_then(|end| end.checked_add(page))
                .is_none()
        {
            return Err(malformed(format!(
                "PT_LOAD at {vaddr:#x} has file size {:#x} and memory size {memory_size:#x}",
                file_bytes.len()
            )));
        }
        if memory_size == 0 {
            continue;
        }
        let flags = header.p_flags(ENDIAN);
        if flags & PF_W != 0 && flags & PF_X != 0 {
            return Err(Refusal::Unsupported(format!(
                "PT_LOAD at {vaddr:#x} is writable and executable"
            )));
        }
        let protection = [
            (PF_R, region::Protection::READ),
            (PF_W, region::Protection::WRITE),
            (PF_X, region::Protection::EXECUTE),
        ]
        .into_iter()
        .filter(|(flag, _)| flags & flag != 0)
        .fold(region::Protection::NONE, |all, (_, one)| all | one);
        segments.push(Segment {
            vaddr,
            memory_size,
            file_bytes,
            protection,
        });
    }
    segments.sort_by_key(|segment| segment.vaddr);
    if segments.is_empty() {
        return Err(malformed("no PT_LOAD segment"));
    }
    for pair in segments.windows(2) {
        if pair[0].pages(page).end > pair[1].pages(page).start {
            return Err(Refusal::Unsupported(format!(
                "PT_LOAD segments at {:#x} and {:#x} share a page (link with -z max-page-size=4096 and the default layout)",
                pair[0].vaddr, pair[1].vaddr
            )));
        }
    }
    Ok(segments)
}

/// The pages of `PT_GNU_RELRO` (data that only relocations write: GOT, vtables, tables of
/// pointers) and their segment's protection without write, applied once relocated so that a
/// stray write can't change where the patch's code jumps. As ld.so does, both ends are
/// rounded down: a partial last page is shared with data that stays writable.
fn relro(
    elf: &ElfFile64<LittleEndian>,
    segments: &[Segment],
) -> Result<Option<(Range<u64>, region::Protection)>, Refusal> {
    let Some(header) = elf
        .elf_program_headers()
        .iter()
        .find(|header| header.p_type(ENDIAN) == PT_GNU_RELRO)
    else {
        return Ok(None);
    };
    let (vaddr, size) = (header.p_vaddr(ENDIAN), header.p_memsz(ENDIAN));
    let segment = segments
        .iter()
        .find(|segment| segment.contains(vaddr, size))
        .ok_or_else(|| {
            malformed(format!(
                "PT_GNU_RELRO at {vaddr:#x}+{size:#x} is not inside one PT_LOAD segment"
            ))
        })?;
    let page = region::page::size() as u64;
    // No overflow: `contains` checked vaddr + size.
    let pages = align_down(vaddr, page)..align_down(vaddr + size, page);
    Ok((!pages.is_empty()).then(|| (pages, segment.protection - region::Protection::WRITE)))
}

/// Resolves every dynamic relocation to (place, value) without writing anything.
fn relocation_stores(
    elf: &ElfFile64<LittleEndian>,
    bytes: &[u8],
    segments: &[Segment],
    load_bias: u64,
) -> Result<Vec<(u64, u64)>, Refusal> {
    let symbols = elf.elf_dynamic_symbol_table();
    let mut stores = Vec::new();
    for section in elf.elf_section_table().iter() {
        if section.sh_flags(ENDIAN) & u64::from(SHF_ALLOC) == 0 {
            continue; // not for the loader (e.g. --emit-relocs)
        }
        match section.sh_type(ENDIAN) {
            SHT_RELA => {}
            SHT_REL | SHT_RELR => {
                return Err(Refusal::Unsupported(
                    "it has REL or RELR relocations; x86_64 images use RELA".into(),
                ))
            }
            _ => continue,
        }
        let Some((relocations, _)) = section
            .rela(ENDIAN, bytes)
            .map_err(|error| malformed(format!("relocation section: {error}")))?
        else {
            continue;
        };
        for relocation in relocations {
            let place = relocation.r_offset(ENDIAN);
            let addend = relocation.r_addend(ENDIAN) as u64;
            let value = match relocation.r_type(ENDIAN, false) {
                R_X86_64_NONE => continue,
                R_X86_64_RELATIVE => load_bias.wrapping_add(addend),
                R_X86_64_GLOB_DAT | R_X86_64_JUMP_SLOT | R_X86_64_64 => {
                    let index = SymbolIndex(relocation.r_sym(ENDIAN, false) as usize);
                    symbol_value(symbols, index, load_bias)?.wrapping_add(addend)
                }
                other => {
                    return Err(Refusal::Unsupported(format!(
                        "relocation type {other} at {place:#x} (only RELATIVE, GLOB_DAT, JUMP_SLOT and 64 are handled)"
                    )))
                }
            };
            if !segments.iter().any(|segment| segment.contains(place, 8)) {
                return Err(malformed(format!(
                    "relocation at {place:#x} lies outside every PT_LOAD segment"
                )));
            }
            stores.push((place, value));
        }
    }
    Ok(stores)
}

/// The runtime address a dynamic symbol stands for: undefined ones come from the libraries
/// already loaded (`dlsym`), defined ones are in the image itself.
fn symbol_value(
    symbols: &SymbolTable<FileHeader64<LittleEndian>>,
    index: SymbolIndex,
    load_bias: u64,
) -> Result<u64, Refusal> {
    let symbol = symbols.symbol(index).map_err(|_| {
        malformed(format!(
            "relocation names symbol #{} which does not exist",
            index.0
        ))
    })?;
    let name = symbol
        .name(ENDIAN, symbols.strings())
        .map_err(|_| malformed(format!("symbol #{} has no valid name", index.0)))?;
    let name = String::from_utf8_lossy(name).into_owned();
    if symbol.st_shndx(ENDIAN) != SHN_UNDEF {
        return Ok(load_bias.wrapping_add(symbol.st_value(ENDIAN)));
    }
    let c_name = CString::new(name.clone()).map_err(|_| malformed("symbol name with NUL"))?;
    // SAFETY: `c_name` is a valid C string; dlsym only reads the loaded objects' tables.
    let address = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c_name.as_ptr()) };
    match (address.is_null(), symbol.st_bind() == STB_WEAK) {
        (false, _) => Ok(address as u64),
        (true, true) => Ok(0), // an unresolved weak reference is null, as ld.so makes it
        (true, false) => Err(Refusal::UnresolvedSymbol(name)),
    }
}

/// Finds `.eh_frame`, checks that its records are well-formed and that a zero word follows
/// them in the loaded image (libgcc walks until it), and returns its link-time address.
///
/// The records checked are the bytes the segment will hold at the section's address, the ones
/// libgcc will read: the section's own file offset could point at other bytes.
fn terminated_eh_frame(
    elf: &ElfFile64<LittleEndian>,
    segments: &[Segment],
) -> Result<Option<u64>, Refusal> {
    let Some((_, section)) = elf
        .elf_section_table()
        .section_by_name(ENDIAN, b".eh_frame")
    else {
        return Ok(None);
    };
    let (start, size) = (section.sh_addr(ENDIAN), section.sh_size(ENDIAN));
    if size == 0 {
        return Ok(None);
    }
    let not_mapped = || {
        malformed(format!(
            ".eh_frame at {start:#x}+{size:#x} is not inside the file bytes of one readable PT_LOAD segment"
        ))
    };
    // libgcc reads it from the moment it is registered: an unreadable one would fault there.
    let segment = segments
        .iter()
        .find(|segment| {
            segment.contains(start, size) && segment.protection.contains(region::Protection::READ)
        })
        .ok_or_else(not_mapped)?;
    let records = segment.file_slice(start, size).ok_or_else(not_mapped)?;
    let records_end = eh_frame_records_length(records)
        .map_err(malformed)?
        .checked_add(start)
        .ok_or_else(not_mapped)?;
    if !segment.contains(records_end, 4) {
        return Err(malformed(format!(
            ".eh_frame at {start:#x} has no room for its terminator in its PT_LOAD segment"
        )));
    }
    // In bounds: `contains` checked records_end + 4.
    if (records_end..records_end + 4).all(|vaddr| segment.loaded_byte(vaddr) == 0) {
        Ok(Some(start))
    } else {
        Err(Refusal::Unsupported(
            ".eh_frame is not zero-terminated (link with the patcher's eh-frame terminator script)"
                .into(),
        ))
    }
}

/// Length of the CIE/FDE records at the start of `eh_frame`, up to a zero terminator or the
/// end of the section, whichever comes first; an error if a record overruns the section.
fn eh_frame_records_length(eh_frame: &[u8]) -> Result<u64, String> {
    let mut at = 0usize;
    while let Some(rest) = eh_frame.get(at..).filter(|rest| !rest.is_empty()) {
        let Some(length) = rest.first_chunk::<4>() else {
            return Err(format!(
                ".eh_frame ends inside the length of a record at +{at:#x}"
            ));
        };
        match u32::from_le_bytes(*length) {
            0 => break,
            u32::MAX => return Err(format!(".eh_frame record at +{at:#x} uses 64-bit DWARF")),
            length => match at.checked_add(4 + length as usize) {
                Some(end) if end <= eh_frame.len() => at = end,
                _ => {
                    return Err(format!(
                        ".eh_frame record at +{at:#x} of {length:#x} bytes runs past the section's {:#x} bytes",
                        eh_frame.len()
                    ))
                }
            },
        }
    }
    Ok(at as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Why `path` is refused when its checksum is right (the other checks are under test).
    fn refusal(path: &Path) -> String {
        // Only a regular file is read for it: reading a FIFO under test would block.
        let checksum = match std::fs::metadata(path) {
            Ok(meta) if meta.is_file() => crate::protocol::checksum(&std::fs::read(path).unwrap()),
            _ => 0,
        };
        load(path, crate::identity::executable().load_bias, checksum)
            .expect_err("must be refused")
            .to_string()
    }

    #[test]
    fn refuses_an_image_with_thread_locals_of_its_own() {
        // This test binary is a real x86_64 PIE whose std uses thread-locals: it passes the
        // ownership and header checks and must be stopped at its PT_TLS segment.
        let me = std::env::current_exe().unwrap();
        let reason = refusal(&me);
        assert!(reason.contains("PT_TLS segment"), "{reason}");
        assert!(reason.contains(&me.display().to_string()), "{reason}");
    }

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let fifo_name = CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: `fifo_name` is a valid C string naming a path in our temporary directory.
        assert_eq!(unsafe { libc::mkfifo(fifo_name.as_ptr(), 0o600) }, 0);
        // Opening a FIFO for reading would block until a writer comes: O_NONBLOCK avoids it.
        assert!(refusal(&fifo).ends_with("is not a regular file"));
        assert!(refusal(dir.path()).ends_with("is not a regular file"));

        let link = dir.path().join("link");
        symlink(std::env::current_exe().unwrap(), &link).unwrap();
        assert!(refusal(&link).ends_with("is not a regular file"));
    }

    #[test]
    fn refuses_a_file_that_is_not_elf() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), b"#!/bin/sh\necho not an image\n").unwrap();
        let reason = refusal(file.path());
        assert!(reason.contains("is corrupt: not an ELF64"), "{reason}");
    }

    /// A CIE/FDE-shaped record: a length word, then that many bytes.
    fn record(body_length: u32) -> Vec<u8> {
        let mut bytes = body_length.to_le_bytes().to_vec();
        bytes.resize(4 + body_length as usize, 0xab);
        bytes
    }

    #[test]
    fn measures_eh_frame_records_up_to_the_end_or_a_terminator() {
        let records = [record(20), record(12)].concat();
        assert_eq!(eh_frame_records_length(&records), Ok(40));
        let terminated = [records.clone(), vec![0; 4]].concat();
        assert_eq!(eh_frame_records_length(&terminated), Ok(40));
        assert_eq!(eh_frame_records_length(&[]), Ok(0));

        let overrun = eh_frame_records_length(&records[..39]).unwrap_err();
        assert!(
            overrun.contains("past the section's 0x27 bytes"),
            "{overrun}"
        );
        let dangling = eh_frame_records_length(&[records.clone(), vec![1, 0]].concat());
        assert!(dangling.is_err());
        let dwarf64 = eh_frame_records_length(&u32::MAX.to_le_bytes()).unwrap_err();
        assert!(dwarf64.contains("64-bit DWARF"), "{dwarf64}");
    }

    #[test]
    fn segments_know_their_pages_bounds_and_loaded_bytes() {
        let segment = Segment {
            vaddr: 0x1290,
            memory_size: 0x1000,
            file_bytes: &[7, 8],
            protection: region::Protection::READ,
        };
        assert_eq!(segment.pages(0x1000), 0x1000..0x3000);
        assert!(segment.contains(0x1290, 8) && segment.contains(0x2288, 8));
        assert!(!segment.contains(0x228c, 8) && !segment.contains(0x1288, 8));
        assert!(!segment.contains(u64::MAX - 2, 8));
        assert_eq!(
            [0x1290, 0x1291, 0x1292].map(|a| segment.loaded_byte(a)),
            [7, 8, 0]
        );
    }
}
