//! Who this process is: the executable's build identity and load bias.
//!
//! Read from the program headers the loader mapped, not from the file on disk, which a
//! rebuild may already have replaced.

use object::elf::{ProgramHeader64, NT_GNU_BUILD_ID, PT_NOTE};
use object::read::elf::NoteIterator;
use object::LittleEndian;

/// The running executable as the patcher needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Executable {
    /// Hex of the GNU build-id note; empty if the executable has none.
    pub build_id: String,
    /// Added by the loader to every link-time address (the ASLR offset).
    pub load_bias: u64,
}

/// Reads the main executable's identity from its in-memory program headers.
pub fn executable() -> Executable {
    let mut found: Option<Executable> = None;
    // SAFETY: `dl_iterate_phdr` calls `first_object` synchronously with pointers valid for
    // the duration of the call; `found` outlives it.
    unsafe {
        libc::dl_iterate_phdr(
            Some(first_object),
            (&mut found as *mut Option<Executable>).cast(),
        )
    };
    found.unwrap_or(Executable {
        build_id: String::new(),
        load_bias: 0,
    })
}

/// `dl_iterate_phdr` callback: the first object reported is the main executable.
unsafe extern "C" fn first_object(
    info: *mut libc::dl_phdr_info,
    _size: usize,
    found: *mut libc::c_void,
) -> libc::c_int {
    // SAFETY: the loader passes a valid `dl_phdr_info`; `found` is the `Option` passed above.
    let (info, found) = unsafe { (&*info, &mut *found.cast::<Option<Executable>>()) };
    // SAFETY: `dlpi_phdr` points at `dlpi_phnum` program headers of the mapped object.
    let headers: &[ProgramHeader64<LittleEndian>] =
        unsafe { std::slice::from_raw_parts(info.dlpi_phdr.cast(), usize::from(info.dlpi_phnum)) };
    let load_bias = info.dlpi_addr;
    let build_id = headers
        .iter()
        .filter(|header| header.p_type.get(LittleEndian) == PT_NOTE)
        .find_map(|header| {
            let address = load_bias + header.p_vaddr.get(LittleEndian);
            let size = header.p_memsz.get(LittleEndian) as usize;
            // SAFETY: a PT_NOTE segment lies inside a PT_LOAD segment, mapped readable at
            // `load_bias + p_vaddr` for `p_memsz` bytes.
            let notes = unsafe { std::slice::from_raw_parts(address as *const u8, size) };
            gnu_build_id(notes, header.p_align.get(LittleEndian))
        })
        .unwrap_or_default();
    *found = Some(Executable {
        build_id,
        load_bias,
    });
    1 // stop after the main executable
}

/// The hex build-id in a PT_NOTE segment's contents.
fn gnu_build_id(notes: &[u8], align: u64) -> Option<String> {
    let mut notes = NoteIterator::<object::elf::FileHeader64<LittleEndian>>::new(
        LittleEndian,
        align.max(4),
        notes,
    )
    .ok()?;
    while let Ok(Some(note)) = notes.next() {
        if note.name() == b"GNU" && note.n_type(LittleEndian) == NT_GNU_BUILD_ID {
            return Some(
                note.desc()
                    .iter()
                    .map(|byte| format!("{byte:02x}"))
                    .collect(),
            );
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_test_binarys_build_id() {
        let me = executable();
        // rustc's links on Linux carry a 20-byte SHA-1 build-id.
        assert_eq!(me.build_id.len(), 40, "{me:?}");
        let exe = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let hex_bytes: Vec<u8> = (0..20)
            .map(|i| u8::from_str_radix(&me.build_id[2 * i..2 * i + 2], 16).unwrap())
            .collect();
        assert!(
            exe.windows(20).any(|w| w == hex_bytes.as_slice()),
            "build-id not found in the executable file"
        );
        assert_ne!(
            me.load_bias, 0,
            "PIE executables are loaded at a random bias"
        );
    }
}
