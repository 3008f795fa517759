//! Whether a base build can be patched at all, checked right after `hotpatch run` builds it:
//! a program that can't be is refused at start with the setting to change, instead of
//! running until its first edit fails. Each refusal is one line.

use crate::capture::build::BuildOutcome;
use linker_shim::{Context, Error, Result, RustcInvocation};
use object::elf::{EM_X86_64, ET_EXEC};
use object::read::elf::{ElfFile64, FileHeader};
use object::Object;
use std::io::Read;

/// The one target hotpatch patches.
const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The magic of an LLVM bitcode file (what `-C linker-plugin-lto` objects are).
const BITCODE_MAGIC: [u8; 4] = *b"BC\xc0\xde";

/// Refuses a build hotpatch can't patch (`Err`, one line naming what to change); otherwise
/// the warnings to show (what works differently).
pub fn check(outcome: &BuildOutcome) -> Result<Vec<String>> {
    let profile = &outcome.target.profile;
    let binary = outcome.revision.rustc.as_ref();
    let invocations = binary.into_iter().chain(&outcome.invocations);
    if let Some(refusal) = invocations
        .clone()
        .find_map(|invocation| codegen_refusal(invocation, profile))
    {
        return Err(Error::new(refusal));
    }
    let objects = outcome.revision.object_paths().into_iter().chain(
        outcome
            .revision
            .libraries
            .iter()
            .flat_map(|library| outcome.revision.library_object_paths(library)),
    );
    for object in objects {
        if is_bitcode(&object)? {
            return Err(Error::new(format!(
                "the build's objects are LLVM bitcode ({}), compiled to machine code only at the final link, so an edit can't be compiled on its own: drop `-C linker-plugin-lto` and set `lto = false` or `lto = \"off\"` in [profile.{profile}]",
                object.display()
            )));
        }
    }
    let data = std::fs::read(&outcome.exe)
        .context(|| format!("could not read the executable {}", outcome.exe.display()))?;
    let flags = binary.map(codegen_options).unwrap_or_default();
    if let Some(refusal) = executable_refusal(&data, profile, &flags) {
        return Err(Error::new(format!("{}: {refusal}", outcome.exe.display())));
    }
    Ok(binary
        .filter(|invocation| codegen_options(invocation).contains(&"panic=abort".to_string()))
        .map(|_| {
            format!(
                "`panic = \"abort\"` in [profile.{profile}]: a panic in patched code aborts the program (no `catch_unwind` can stop it); set `panic = \"unwind\"` for panics to unwind through patched code"
            )
        })
        .into_iter()
        .collect())
}

/// Why code `invocation` compiles can't be patched: another target, or whole-program LTO.
fn codegen_refusal(invocation: &RustcInvocation, profile: &str) -> Option<String> {
    if let Some(target) = invocation.flag_value("--target").filter(|t| *t != TARGET) {
        return Some(format!(
            "`{}` is built for {target}; hotpatch patches {TARGET} programs only: build for the host ({TARGET}, no `--target` or `build.target`)",
            invocation.crate_name
        ));
    }
    let options = codegen_options(invocation);
    let lto = options.iter().find_map(|option| match option.as_str() {
        "lto" => Some("fat"),
        _ => option
            .strip_prefix("lto=")
            .filter(|value| !matches!(*value, "off" | "no" | "n" | "false")),
    });
    if let Some(lto) = lto {
        return Some(format!(
            "`lto = \"{lto}\"` in [profile.{profile}] compiles the whole program at its final link, so an edit can't be compiled on its own: set `lto = false` (the default, which hotpatch patches) or `lto = \"off\"` in [profile.{profile}]"
        ));
    }
    options
        .iter()
        .any(|option| option == "linker-plugin-lto")
        .then(|| {
            format!(
                "`-C linker-plugin-lto` (compiling `{}`) leaves the code as LLVM bitcode until the final link, so an edit can't be compiled on its own: drop it from the rustflags",
                invocation.crate_name
            )
        })
}

/// The `-C` options of `invocation` (`-C x`, `-Cx`, `--codegen x`, `--codegen=x`).
fn codegen_options(invocation: &RustcInvocation) -> Vec<String> {
    let mut options = Vec::new();
    let mut args = invocation.args.iter();
    while let Some(arg) = args.next() {
        let option = match arg.as_str() {
            "-C" | "--codegen" => args.next().map(String::as_str),
            other => other
                .strip_prefix("--codegen=")
                .or_else(|| other.strip_prefix("-C")),
        };
        options.extend(option.map(str::to_owned));
    }
    options
}

/// Why the executable `data` can't be patched: another machine, not position-independent,
/// or no symbol table. `flags` are the binary's `-C` options, to name the one to change.
fn executable_refusal(data: &[u8], profile: &str, flags: &[String]) -> Option<String> {
    let Ok(elf) = ElfFile64::<object::LittleEndian>::parse(data) else {
        return Some(format!(
            "not a 64-bit ELF executable; hotpatch patches {TARGET} programs only"
        ));
    };
    let header = elf.elf_header();
    let endian = elf.endian();
    if header.e_machine(endian) != EM_X86_64 {
        return Some(format!(
            "not an x86-64 executable; hotpatch patches {TARGET} programs only: build for the host ({TARGET})"
        ));
    }
    if header.e_type(endian) == ET_EXEC {
        let cause = flags
            .iter()
            .find(|flag| *flag == "relocation-model=static" || flag.contains("no-pie"))
            .map_or("a non-PIE link".to_string(), |flag| format!("`-C {flag}`"));
        return Some(format!(
            "not position-independent ({cause}); patches are placed relative to where the program is loaded: remove that flag from the rustflags (RUSTFLAGS, `.cargo/config.toml`)"
        ));
    }
    if elf.section_by_name(".symtab").is_none() {
        return Some(format!(
            "no symbol table (stripped); patches bind to the program's functions and statics by name: set `strip = \"none\"` (or `\"debuginfo\"`) in [profile.{profile}] and drop any `-s`/`--strip-all` link argument"
        ));
    }
    None
}

/// True for an LLVM bitcode file.
fn is_bitcode(path: &std::path::Path) -> Result<bool> {
    let mut magic = [0; 4];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut magic));
    match read {
        Ok(()) => Ok(magic == BITCODE_MAGIC),
        Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(Error::new(format!(
            "could not read {}: {error}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invocation(args: &[&str]) -> RustcInvocation {
        RustcInvocation {
            rustc: "rustc".into(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
            extra_args: Vec::new(),
            links_through_shim: false,
            env: Default::default(),
            cwd: "/".into(),
            package: "app".into(),
            crate_name: "app".into(),
            crate_types: vec!["bin".into()],
            source: None,
            profile: "release".into(),
        }
    }

    #[test]
    fn codegen_options_in_every_spelling() {
        let options = codegen_options(&invocation(&[
            "-C",
            "opt-level=3",
            "-Clto=thin",
            "--codegen",
            "panic=abort",
            "--codegen=strip=none",
            "--crate-name",
            "app",
        ]));
        assert_eq!(
            options,
            ["opt-level=3", "lto=thin", "panic=abort", "strip=none"]
        );
    }

    #[test]
    fn whole_program_lto_and_other_targets_are_refused() {
        let refusal = |args: &[&str]| codegen_refusal(&invocation(args), "release");
        let fat = refusal(&["-C", "lto"]).unwrap();
        assert!(
            fat.starts_with("`lto = \"fat\"` in [profile.release]") && fat.contains("lto = false"),
            "{fat}"
        );
        assert!(refusal(&["-C", "lto=thin"])
            .unwrap()
            .starts_with("`lto = \"thin\"`"));
        assert!(refusal(&["-C", "linker-plugin-lto"])
            .unwrap()
            .contains("-C linker-plugin-lto"));
        assert!(refusal(&["--target", "aarch64-unknown-linux-gnu"])
            .unwrap()
            .contains("built for aarch64-unknown-linux-gnu"));
        for fine in [
            &["-C", "lto=off"][..],
            &["-C", "opt-level=3", "-C", "codegen-units=16"],
            &["--target", TARGET],
        ] {
            assert_eq!(refusal(fine), None, "{fine:?}");
        }
    }

    #[test]
    fn this_test_executable_fits() {
        let data = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert_eq!(executable_refusal(&data, "dev", &[]), None);
        assert!(executable_refusal(b"not an executable", "dev", &[]).is_some());
    }
}
