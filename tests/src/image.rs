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
        .args(["-z", "norelro", "-z", "max-page-size=4096"])
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
