//! What a running process uses, read from `/proc`, and what a patch image will occupy in it.

use linker_shim::{Context, Error, Result};
use object::read::elf::{ElfFile64, ProgramHeader};
use std::path::Path;

/// A `kB` line of `/proc/<pid>/status` (`key` with its colon: `"VmRSS:"`).
pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).context(|| format!("could not read {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Error::new(format!("no {key} in {path}")))
}

/// How many file descriptors the process has open.
pub fn open_fds(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    Ok(std::fs::read_dir(&path)
        .context(|| format!("could not list {path}"))?
        .count())
}

/// The KiB of pages the runtime makes accessible for a patch image: each `PT_LOAD` segment's
/// pages (the gaps between segments stay inaccessible and never resident).
pub fn image_pages_kib(image: &Path) -> Result<u64> {
    let bytes = std::fs::read(image).context(|| format!("could not read {}", image.display()))?;
    let elf = ElfFile64::<object::LittleEndian>::parse(&*bytes)
        .context(|| format!("{} is not an ELF image", image.display()))?;
    let endian = elf.endian();
    Ok(elf
        .elf_program_headers()
        .iter()
        .filter(|header| header.p_type(endian) == object::elf::PT_LOAD)
        .map(|header| {
            let start = header.p_vaddr(endian) / 4096;
            let end = (header.p_vaddr(endian) + header.p_memsz(endian)).div_ceil(4096);
            (end - start) * 4
        })
        .sum())
}
