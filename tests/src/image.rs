//! Patch images built with the real toolchain, linked the way the patcher links them: a
//! Rust object (`rustc --emit=obj`, PIC) through rust-lld into a PIE image at a fixed base in
//! the executable's link-time coordinates, bound to executable symbols via `__ehdr_start`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Keeps libgcc's `__register_frame` from walking past lld's unterminated `.eh_frame`.
const EH_FRAME_TERMINATOR: &str =
    "SECTIONS { .eh_frame_terminator : { LONG(0) } } INSERT AFTER .eh_frame;\n";

/// What to link: the Rust source of the patch and where it must sit.
pub struct ImageSpec<'a> {
    /// File stem for the source, object and image in the output directory.
    pub name: &'a str,
    /// A `#![no_std]` library: it may call libc, never core's out-of-line functions.
    pub source: &'a str,
    /// Link-time address of the image (e.g. `-256 MiB` as `0xffff_ffff_f000_0000`).
    pub base: u64,
    /// Executable symbols the source declares `extern`, with their link-time addresses
    /// (`st_value` in the executable's `.symtab`).
    pub exe_symbols: &'a [(&'a str, u64)],
    /// Functions to keep (`--gc-sections` drops everything else).
    pub roots: &'a [&'a str],
}

/// Compiles and links `spec` in `dir`; returns the image's path. Panics with the tool's
/// output when a step fails.
pub fn link_image(dir: &Path, spec: &ImageSpec) -> PathBuf {
    let source = dir.join(format!("{}.rs", spec.name));
    let object = dir.join(format!("{}.o", spec.name));
    let script = dir.join("eh-frame-terminator.ld");
    let image = dir.join(format!("{}.elf", spec.name));
    std::fs::write(&source, spec.source).expect("write the patch source");
    std::fs::write(&script, EH_FRAME_TERMINATOR).expect("write the linker script");
    run(Command::new(rustc())
        .args(["--edition=2021", "--crate-type=lib", "--emit=obj"])
        .args(["-C", "relocation-model=pic", "-C", "opt-level=2", "-o"])
        .args([&object, &source]));
    let mut lld = Command::new(rust_lld());
    lld.arg("-pie")
        .arg(format!("--image-base={:#x}", spec.base))
        .args(["-z", "relro", "-z", "max-page-size=4096"])
        .args(["--hash-style=gnu", "--gc-sections"]);
    for (position, root) in spec.roots.iter().enumerate() {
        lld.arg(if position == 0 { "-e" } else { "-u" }).arg(root);
    }
    for (name, address) in spec.exe_symbols {
        // Relative to the image, never absolute: an absolute defsym in a PIE gets no bias.
        let offset = address.wrapping_sub(spec.base);
        lld.arg(format!("--defsym={name}=__ehdr_start+{offset:#x}"));
    }
    run(lld
        .arg(&object)
        .arg(&script)
        .args([shared_library("libc.so.6"), shared_library("libgcc_s.so.1")])
        .arg("-o")
        .arg(&image));
    image
}

/// A patch touching everything the loader must handle: a table of pointers (RELATIVE), a
/// libc call (GLOB_DAT), an executable static (bound via `__ehdr_start`), and a frame that
/// a panic must unwind through (`.eh_frame`). `black_box` keeps the optimiser from folding
/// the table and `strlen` away.
const SAMPLE_SOURCE: &str = r#"
#![no_std]
use core::hint::black_box;
use core::sync::atomic::{AtomicU64, Ordering};
extern "C" {
    fn strlen(s: *const u8) -> usize;
    static LOADER_TEST_COUNTER: AtomicU64;
}
static WORDS: [&str; 3] = ["alpha\0", "beta\0", "gamma\0"];
#[no_mangle]
pub extern "C" fn word_initial(index: usize) -> u8 {
    black_box(&WORDS).get(index).and_then(|w| w.as_bytes().first().copied()).unwrap_or(0)
}
#[no_mangle]
pub extern "C" fn total_length() -> usize {
    black_box(&WORDS).iter().map(|w| unsafe { strlen(w.as_ptr()) }).sum()
}
#[no_mangle]
pub extern "C" fn bump_counter() -> u64 {
    unsafe { LOADER_TEST_COUNTER.fetch_add(1, Ordering::SeqCst) + 1 }
}
#[no_mangle]
pub extern "C-unwind" fn call_and_add_one(callback: extern "C-unwind" fn() -> u64) -> u64 {
    callback() + 1
}
"#;

const SAMPLE_ROOTS: &[&str] = &[
    "word_initial",
    "total_length",
    "bump_counter",
    "call_and_add_one",
];

/// Links [`SAMPLE_SOURCE`] at `base` for the running test executable, which must define
/// `#[no_mangle] static LOADER_TEST_COUNTER: AtomicU64`, at link-time address `counter`.
pub fn link_sample(dir: &Path, base: u64, counter: u64) -> PathBuf {
    link_image(
        dir,
        &ImageSpec {
            name: "patch",
            source: SAMPLE_SOURCE,
            base,
            exe_symbols: &[("LOADER_TEST_COUNTER", counter)],
            roots: SAMPLE_ROOTS,
        },
    )
}

fn rustc() -> String {
    std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into())
}

/// The lld that ships with rustc, as the patcher uses it.
pub fn rust_lld() -> PathBuf {
    let sysroot = Command::new(rustc())
        .args(["--print", "sysroot"])
        .output()
        .expect("rustc --print sysroot");
    let sysroot = String::from_utf8(sysroot.stdout).expect("UTF-8 sysroot");
    Path::new(sysroot.trim()).join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld")
}

/// Where the C compiler finds a system library, e.g. `libc.so.6`.
fn shared_library(name: &str) -> PathBuf {
    let found = Command::new("cc")
        .arg(format!("-print-file-name={name}"))
        .output()
        .expect("cc -print-file-name");
    PathBuf::from(String::from_utf8(found.stdout).expect("UTF-8 path").trim())
}

fn run(command: &mut Command) {
    let output = command.output().expect("start the toolchain");
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
