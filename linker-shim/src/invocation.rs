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
