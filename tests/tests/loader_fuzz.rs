//! Property-based fuzzing of the patch-image loader: a real image (the sample linked with
//! rustc + rust-lld as in `loader.rs`), mutated where the loader looks — ELF header, program
//! headers, section headers, dynamic section, relocations, `.eh_frame` — or truncated, then
//! loaded into this process with a matching checksum. Each mutant must be refused with a
//! reason or load (and is unloaded again); never panic, never crash.
//!
//! A process of its own: a mutant may map anywhere that is free, which must not take the
//! range another test of `loader.rs` is about to load at. `PROPTEST_CASES` raises the
//! number of cases (the default keeps the run under a minute on a busy 2-core machine).

use hotreload::loader::{load, LoadError};
use object::read::elf::{FileHeader, SectionHeader};
use object::LittleEndian;
use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use tests::image::link_sample;

/// The sample image binds to it; the fuzzed images never run, so it is never bumped.
#[no_mangle]
pub static LOADER_TEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// −1 GiB in the executable's link-time coordinates.
const BASE: u64 = 0xffff_ffff_c000_0000;

/// Where the loader looks: byte ranges of the file whose mutation reaches its checks.
fn regions(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let endian = LittleEndian;
    let header = object::elf::FileHeader64::<LittleEndian>::parse(bytes).unwrap();
    let table = |offset: u64, count: usize, size: usize| {
        let start = offset as usize;
        start..start + count * size
    };
    let mut regions = vec![
        0..size_of::<object::elf::FileHeader64<LittleEndian>>(),
        table(
            header.e_phoff(endian),
            header.e_phnum(endian) as usize,
            size_of::<object::elf::ProgramHeader64<LittleEndian>>(),
        ),
        table(
            header.e_shoff(endian),
            header.e_shnum(endian) as usize,
            size_of::<object::elf::SectionHeader64<LittleEndian>>(),
        ),
    ];
    let sections = header.sections(endian, bytes).unwrap();
    for name in [".dynamic", ".rela.dyn", ".rela.plt", ".dynsym", ".eh_frame"] {
        if let Some((_, section)) = sections.section_by_name(endian, name.as_bytes()) {
            let (start, size) = section.file_range(endian).unwrap();
            regions.push(start as usize..(start + size) as usize);
        }
    }
    regions
}

/// One change to the image.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flips a bit of a byte in one of the [`regions`].
    FlipBit { region: Index, at: Index, bit: u8 },
    /// Writes a 64-bit word at a byte of one of the [`regions`] (addresses, sizes, offsets).
    SetWord {
        region: Index,
        at: Index,
        value: u64,
    },
    /// Writes a byte anywhere in the file.
    SetByte { at: Index, value: u8 },
    /// Cuts the file short.
    Truncate { at: Index },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Words that sit at the edges of arithmetic: wrap-arounds, page edges, sign bits.
    let word = prop_oneof![
        prop::sample::select(vec![
            0,
            1,
            4,
            8,
            0xfff,
            0x1000,
            1 << 31,
            u32::MAX as u64,
            1 << 63,
            u64::MAX,
            u64::MAX - 3,
            u64::MAX - 0xfff,
            BASE,
        ]),
        any::<u64>(),
    ];
    prop_oneof![
        4 => (any::<Index>(), any::<Index>(), 0..8u8)
            .prop_map(|(region, at, bit)| Mutation::FlipBit { region, at, bit }),
        3 => (any::<Index>(), any::<Index>(), word)
            .prop_map(|(region, at, value)| Mutation::SetWord { region, at, value }),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(at, value)| Mutation::SetByte { at, value }),
        1 => any::<Index>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

fn mutate(image: &[u8], regions: &[std::ops::Range<usize>], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = image.to_vec();
    for mutation in mutations {
        if bytes.is_empty() {
            break;
        }
        let within = |region: &Index, at: &Index, length: usize| {
            let region = region.get(regions);
            region.start + at.index(region.len().saturating_sub(length - 1).max(1))
        };
        match mutation {
            Mutation::FlipBit { region, at, bit } => {
                let at = within(region, at, 1);
                if let Some(byte) = bytes.get_mut(at) {
                    *byte ^= 1 << bit;
                }
            }
            Mutation::SetWord { region, at, value } => {
                let at = within(region, at, 8);
                if let Some(word) = bytes.get_mut(at..at + 8) {
                    word.copy_from_slice(&value.to_le_bytes());
                }
            }
            Mutation::SetByte { at, value } => *at.get_mut(&mut bytes) = *value,
            Mutation::Truncate { at } => bytes.truncate(at.index(bytes.len())),
        }
    }
    bytes
}

fn config() -> Config {
    let config = Config {
        // What `proptest!` sets: failures found are kept in `proptest-regressions/`.
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        ..Config::default()
    };
    match std::env::var_os("PROPTEST_CASES") {
        Some(_) => config, // the default configuration reads it
        None => Config {
            cases: 20_000,
            ..config
        },
    }
}

#[test]
fn mutated_images_are_refused_or_load() {
    let dir = tempfile::tempdir().unwrap();
    let bias = hotreload::identity::executable().load_bias;
    let counter = (&LOADER_TEST_COUNTER as *const AtomicU64 as u64).wrapping_sub(bias);
    let image = std::fs::read(link_sample(dir.path(), BASE, counter)).unwrap();
    let regions = regions(&image);
    let mutant = dir.path().join("mutant.elf");
    let (loaded, refused) = (AtomicU64::new(0), AtomicU64::new(0));

    let mut runner = TestRunner::new(config());
    let started = std::time::Instant::now();
    let result = runner.run(&prop::collection::vec(mutation(), 1..4), |mutations| {
        let bytes = mutate(&image, &regions, &mutations);
        write_private(&mutant, &bytes);
        let checksum = hotreload::protocol::checksum(&bytes);
        match load(&mutant, bias, checksum) {
            Ok(image) => {
                loaded.fetch_add(1, Ordering::Relaxed);
                // SAFETY: nothing ran in or pointed into the image.
                unsafe { image.unload() }.map_err(|error| {
                    TestCaseError::fail(format!("unloading a loaded mutant: {error}"))
                })?;
            }
            Err(refusal) => {
                refused.fetch_add(1, Ordering::Relaxed);
                prop_assert!(
                    !matches!(
                        refusal,
                        LoadError::ChecksumMismatch { .. } | LoadError::Io { .. }
                    ),
                    "refused for the wrong reason: {refusal}"
                );
            }
        }
        Ok(())
    });
    eprintln!(
        "{} mutants in {:.1?}: {} loaded and unloaded, {} refused",
        loaded.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed),
        started.elapsed(),
        loaded.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    if let Err(failure) = result {
        panic!("{failure}");
    }
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the mutations reach the loader's checks"
    );
}

/// Writes `bytes` to `path` as a file the loader accepts to read (owner-only).
fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
