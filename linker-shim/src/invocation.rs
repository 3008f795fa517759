//! The exact compiler invocation of one workspace crate, as cargo ran it. Re-running it
//! (without cargo) reproduces the same symbol names, which depend on every flag.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One `rustc` run, recorded by hotpatch's `RUSTC_WORKSPACE_WRAPPER` role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RustcInvocation {
    /// The compiler cargo chose (cargo passes it to the wrapper as the first argument).
    pub rustc: PathBuf,
    /// Arguments exactly as cargo passed them.
    pub args: Vec<String>,
    /// Arguments hotpatch appended for the recorded binary (link flags); the compiler saw
    /// `args`, then these, then `-C linker=<hotpatch>` when `links_through_shim`.
    pub extra_args: Vec<String>,
    /// Whether the link went through hotpatch's linker role (only the binary being recorded).
    pub links_through_shim: bool,
    /// The complete environment, minus hotpatch's own variables and jobserver handles.
    pub env: BTreeMap<String, String>,
    pub cwd: PathBuf,
    /// `CARGO_PKG_NAME` of the crate's package.
    pub package: String,
    /// `--crate-name`.
    pub crate_name: String,
    /// Every `--crate-type` (cargo gives `bin` for binaries and examples).
    pub crate_types: Vec<String>,
    /// The crate root source file, e.g. `src/main.rs`, absolute.
    pub source: Option<PathBuf>,
    /// Cargo profile of the build (`dev`, `release`, …).
    pub profile: String,
}

impl RustcInvocation {
    /// The full argument list the compiler gets, linking through `shim` when recorded so.
    pub fn compiler_args(&self, shim: &Path) -> Vec<String> {
        let mut args = self.args.clone();
        args.extend(self.extra_args.iter().cloned());
        if self.links_through_shim {
            args.push("-C".into());
            args.push(format!("linker={}", shim.display()));
        }
        args
    }

    /// Value of the last `--flag VALUE` or `--flag=VALUE` argument.
    pub fn flag_value(&self, flag: &str) -> Option<&str> {
        flag_value(&self.args, flag)
    }

    /// The directory rustc writes its outputs to (`--out-dir`, relative to `cwd`).
    pub fn out_dir(&self) -> PathBuf {
        self.cwd.join(self.flag_value("--out-dir").unwrap_or("."))
    }

    /// `-C extra-filename=…`: the suffix cargo gives every output file of the crate.
    pub fn extra_filename(&self) -> &str {
        self.args
            .iter()
            .find_map(|arg| arg.strip_prefix("extra-filename="))
            .unwrap_or_default()
    }

    /// The dep-info file rustc writes into `out_dir`: the crate's source files.
    pub fn dep_info_in(&self, out_dir: &Path) -> PathBuf {
        out_dir.join(format!("{}{}.d", self.crate_name, self.extra_filename()))
    }

    /// The rlib a library crate compiles to in `out_dir`.
    pub fn rlib_in(&self, out_dir: &Path) -> PathBuf {
        out_dir.join(format!(
            "lib{}{}.rlib",
            self.crate_name,
            self.extra_filename()
        ))
    }

    /// True for a crate whose rlib is linked into executables (`lib`/`rlib`), not a
    /// proc-macro, binary or build script.
    pub fn is_library(&self) -> bool {
        self.crate_types.iter().any(|t| t == "lib" || t == "rlib")
    }

    /// Key under which the latest invocation of this crate is kept.
    pub fn key(&self) -> String {
        let kind = if self.crate_types.iter().any(|t| t == "bin") {
            "bin"
        } else {
            "lib"
        };
        format!(
            "{}--{}--{kind}--{}",
            self.package, self.crate_name, self.profile
        )
    }
}

/// Value of the last `--flag VALUE` or `--flag=VALUE` in `args`.
pub fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if arg == flag {
            found = iter.next().map(String::as_str);
        } else if let Some(value) = arg
            .strip_prefix(flag)
            .and_then(|rest| rest.strip_prefix('='))
        {
            found = Some(value);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_values_in_both_spellings_last_wins() {
        let args: Vec<String> = [
            "--crate-name",
            "app",
            "--out-dir=/a",
            "--out-dir",
            "/b",
            "--edition=2021",
        ]
        .map(String::from)
        .into();
        assert_eq!(flag_value(&args, "--crate-name"), Some("app"));
        assert_eq!(flag_value(&args, "--out-dir"), Some("/b"));
        assert_eq!(flag_value(&args, "--crate-type"), None);
    }
}
