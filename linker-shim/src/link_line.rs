//! What rustc asked the linker to do: the arguments (with `@response-file`s expanded), the
//! directory it ran in, and which cargo package and binary it was linking.

use crate::error::{Context, Result};
use serde::{Deserialize, Serialize};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// The cargo variables the linker inherits; they say which package and binary is linked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CargoLinkEnv {
    pub pkg_name: Option<String>,
    pub bin_name: Option<String>,
    pub primary_package: bool,
    pub manifest_dir: Option<PathBuf>,
}

impl CargoLinkEnv {
    /// Reads `CARGO_PKG_NAME`, `CARGO_BIN_NAME`, `CARGO_PRIMARY_PACKAGE`, `CARGO_MANIFEST_DIR`.
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok();
        CargoLinkEnv {
            pkg_name: var("CARGO_PKG_NAME"),
            bin_name: var("CARGO_BIN_NAME"),
            primary_package: std::env::var_os("CARGO_PRIMARY_PACKAGE").is_some(),
            manifest_dir: var("CARGO_MANIFEST_DIR").map(PathBuf::from),
        }
    }
}

/// One link as rustc requested it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLine {
    /// The linker that really links (`cc` unless the user configured another one).
    pub linker: String,
    /// rustc's arguments with every `@file` replaced by the arguments it contains.
    pub args: Vec<String>,
    /// Directory rustc ran the linker in; relative paths in `args` start here.
    pub cwd: PathBuf,
    pub cargo: CargoLinkEnv,
}

impl LinkLine {
    /// Records the link rustc is asking for right now (arguments as given to the shim).
    pub fn capture(linker: &str, raw_args: &[OsString]) -> Result<Self> {
        let cwd =
            std::env::current_dir().context(|| "could not read the current directory".into())?;
        let args = expand_response_files(raw_args, &cwd)?
            .into_iter()
            .map(|arg| arg.to_string_lossy().into_owned())
            .collect();
        Ok(LinkLine {
            linker: linker.to_owned(),
            args,
            cwd,
            cargo: CargoLinkEnv::from_env(),
        })
    }

    /// The object files on the line (`*.o`), as absolute paths.
    pub fn objects(&self) -> Vec<PathBuf> {
        self.args
            .iter()
            .filter(|arg| !arg.starts_with('-') && arg.ends_with(".o"))
            .map(|arg| self.cwd.join(arg))
            .collect()
    }

    /// The archives on the line (`*.rlib`), as absolute paths.
    pub fn archives(&self) -> Vec<PathBuf> {
        self.args
            .iter()
            .filter(|arg| !arg.starts_with('-') && arg.ends_with(".rlib"))
            .map(|arg| self.cwd.join(arg))
            .collect()
    }

    /// The file the link writes (`-o PATH` or `-oPATH`), as an absolute path.
    pub fn output(&self) -> Option<PathBuf> {
        let mut args = self.args.iter();
        while let Some(arg) = args.next() {
            if arg == "-o" {
                return args.next().map(|path| self.cwd.join(path));
            }
            if let Some(path) = arg.strip_prefix("-o") {
                return Some(self.cwd.join(path));
            }
        }
        None
    }
}

/// Replaces each `@file` argument by the arguments in that file, recursively, the way
/// `cc` reads them (rustc writes one when the command line gets too long). A `@name` that
/// is not a readable file stays as it is, as `cc` does.
pub fn expand_response_files(args: &[OsString], cwd: &Path) -> Result<Vec<OsString>> {
    const MAX_NESTING: usize = 16;
    let mut expanded = Vec::with_capacity(args.len());
    let mut pending: Vec<(OsString, usize)> = args.iter().rev().map(|a| (a.clone(), 0)).collect();
    while let Some((arg, depth)) = pending.pop() {
        let Some(file) = arg.as_bytes().strip_prefix(b"@") else {
            expanded.push(arg);
            continue;
        };
        let path = cwd.join(OsStr::from_bytes(file));
        let Ok(contents) = std::fs::read(&path) else {
            expanded.push(arg);
            continue;
        };
        if depth >= MAX_NESTING {
            return Err(crate::Error::new(format!(
                "response file {} nests more than {MAX_NESTING} levels deep",
                path.display()
            )));
        }
        pending.extend(
            split_response_file(&contents)
                .into_iter()
                .rev()
                .map(|a| (a, depth + 1)),
        );
    }
    Ok(expanded)
}

/// Splits a response file with GNU rules: whitespace separates arguments, `'…'` and `"…"`
/// group, a backslash takes the next byte literally (rustc escapes spaces and backslashes).
fn split_response_file(contents: &[u8]) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    let mut quote: Option<u8> = None;
    let mut bytes = contents.iter().copied();
    while let Some(byte) = bytes.next() {
        match (quote, byte) {
            (_, b'\\') => {
                if let Some(escaped) = bytes.next() {
                    current.get_or_insert_with(Vec::new).push(escaped);
                }
            }
            (Some(q), _) if byte == q => quote = None,
            (Some(_), _) => current.get_or_insert_with(Vec::new).push(byte),
            (None, b'\'' | b'"') => {
                quote = Some(byte);
                current.get_or_insert_with(Vec::new);
            }
            (None, _) if byte.is_ascii_whitespace() => {
                if let Some(arg) = current.take() {
                    args.push(OsString::from_vec(arg));
                }
            }
            (None, _) => current.get_or_insert_with(Vec::new).push(byte),
        }
    }
    args.extend(current.map(OsString::from_vec));
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: Vec<OsString>) -> Vec<String> {
        args.into_iter().map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn response_files_split_like_gnu_tools() {
        let args =
            split_response_file(b"-m64\n/tmp/with\\ space.o\n'quoted arg' \"x y\"\nC:\\\\dir\n\n");
        assert_eq!(
            strings(args),
            ["-m64", "/tmp/with space.o", "quoted arg", "x y", "C:\\dir"]
        );
    }

    #[test]
    fn response_files_expand_in_place_and_nested() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("inner"), "b.o -lc").unwrap();
        std::fs::write(dir.path().join("outer"), "a.o @inner").unwrap();
        let args: Vec<OsString> = ["-m64", "@outer", "-o", "out", "@missing"]
            .map(OsString::from)
            .into();
        let expanded = expand_response_files(&args, dir.path()).unwrap();
        assert_eq!(
            strings(expanded),
            ["-m64", "a.o", "b.o", "-lc", "-o", "out", "@missing"]
        );
    }

    #[test]
    fn self_including_response_file_is_an_error_not_a_hang() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("loop"), "@loop").unwrap();
        let err = expand_response_files(&[OsString::from("@loop")], dir.path()).unwrap_err();
        assert!(err.message().contains("nests more than"), "{err}");
    }

    #[test]
    fn objects_and_output_are_found_on_the_line() {
        let line = LinkLine {
            linker: "cc".into(),
            args: [
                "-m64",
                "deps/a.rcgu.o",
                "/abs/symbols.o",
                "-Wl,--as-needed",
                "-o",
                "deps/app-123",
                "-pie",
            ]
            .map(String::from)
            .into(),
            cwd: PathBuf::from("/work"),
            cargo: CargoLinkEnv::default(),
        };
        assert_eq!(
            line.objects(),
            [
                PathBuf::from("/work/deps/a.rcgu.o"),
                PathBuf::from("/abs/symbols.o")
            ]
        );
        assert_eq!(line.output(), Some(PathBuf::from("/work/deps/app-123")));
    }
}
