//! The rustc-wrapper role: cargo runs `hotpatch` as `RUSTC_WRAPPER` for every crate. For
//! each *local* crate (a workspace member or a path dependency, never a registry crate) the
//! wrapper records the exact invocation (arguments, environment, directory) so a patch can
//! recompile it without cargo, and it routes the link of the binary being built through the
//! linker shim, linked fat so later patches find any std function they call; the shim also
//! records the objects of the local libraries linked in.
//!
//! `RUSTC_WRAPPER` rather than `RUSTC_WORKSPACE_WRAPPER`: cargo runs the latter only for
//! workspace members, and a path dependency outside the workspace root is none.

use linker_shim::{
    flag_value, Context, Error, LinkRequest, LocalLibrary, Result, RoleRequest, RustcInvocation,
    Store, TargetKey, LINK_REQUEST_ENV,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Environment variable carrying a [`WrapRequest`] (JSON) from `hotpatch build` to the
/// wrapper. Its presence is what makes `hotpatch` act as a rustc wrapper.
pub const WRAP_REQUEST_ENV: &str = "HOTPATCH_WRAP_REQUEST";

/// Flags appended to the recorded binary's compilation. `--no-gc-sections` keeps every std
/// function in the executable (a patch may call one the original did not); `strip=none`
/// keeps `.symtab`, which patches are resolved against.
pub const BINARY_EXTRA_ARGS: [&str; 4] =
    ["-C", "link-arg=-Wl,--no-gc-sections", "-C", "strip=none"];

/// Variables never recorded: hotpatch's own, and jobserver handles that are only valid
/// inside the cargo process that created them.
const UNRECORDED_ENV: [&str; 5] = [
    WRAP_REQUEST_ENV,
    LINK_REQUEST_ENV,
    "CARGO_MAKEFLAGS",
    "MAKEFLAGS",
    "MFLAGS",
];

/// What `hotpatch build` tells the wrapper.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WrapRequest {
    /// Root of the revision store.
    pub store: PathBuf,
    /// The executable whose link is recorded.
    pub target: TargetKey,
    /// Directories of the local packages: only their crates are recorded.
    pub local_packages: Vec<PathBuf>,
    /// The `RUSTC_WRAPPER` the person had set (sccache…), still run for the other crates.
    pub outer_wrapper: Option<PathBuf>,
}

impl RoleRequest for WrapRequest {
    const ENV: &'static str = WRAP_REQUEST_ENV;
}

/// Acts as `RUSTC_WORKSPACE_WRAPPER`: `args` are the compiler's path and its arguments.
/// Replaces this process with the compiler; returns only on failure.
pub fn run_as_rustc_wrapper(request: &WrapRequest, args: &[OsString]) -> ExitCode {
    let error = match wrap(request, args) {
        Ok(mut rustc) => Error::new(format!("could not run the compiler: {}", rustc.exec())),
        Err(error) => error,
    };
    eprintln!("error: hotpatch (acting as rustc wrapper): {error}");
    ExitCode::FAILURE
}

fn wrap(request: &WrapRequest, args: &[OsString]) -> Result<Command> {
    let (rustc, rustc_args) = args
        .split_first()
        .ok_or_else(|| Error::new("no compiler given to the wrapper"))?;
    let rustc_args: Vec<String> = rustc_args
        .iter()
        .map(|arg| {
            arg.clone()
                .into_string()
                .map_err(|arg| Error::new(format!("non-UTF-8 compiler argument {arg:?}")))
        })
        .collect::<Result<_>>()?;
    // Cargo also runs the wrapper to probe the compiler (`rustc - --crate-name ___ --print …`):
    // only compilations of a local package's source file are recorded.
    let package = std::env::var("CARGO_PKG_NAME").ok();
    let crate_name = flag_value(&rustc_args, "--crate-name").map(str::to_owned);
    let is_local = std::env::var_os("CARGO_MANIFEST_DIR")
        .is_some_and(|dir| request.local_packages.iter().any(|local| *local == dir));
    let (Some(package), Some(crate_name), Some(source), true) =
        (package, crate_name, crate_root(&rustc_args), is_local)
    else {
        let mut command = match &request.outer_wrapper {
            Some(outer) => {
                let mut command = Command::new(outer);
                command.arg(rustc);
                command
            }
            None => Command::new(rustc),
        };
        command.env_remove(WRAP_REQUEST_ENV).args(&rustc_args);
        return Ok(command);
    };
    let mut command = Command::new(rustc);
    command.env_remove(WRAP_REQUEST_ENV);
    let crate_types: Vec<String> = collect_flag_values(&rustc_args, "--crate-type");
    let is_recorded_binary = crate_types.iter().any(|t| t == "bin")
        && package == request.target.package
        && crate_name == request.target.crate_name();
    let cwd = std::env::current_dir().context(|| "could not read the current directory".into())?;
    let mut invocation = RustcInvocation {
        rustc: PathBuf::from(rustc),
        source: Some(cwd.join(source)),
        args: rustc_args,
        extra_args: Vec::new(),
        links_through_shim: is_recorded_binary,
        env: std::env::vars()
            .filter(|(name, _)| !UNRECORDED_ENV.contains(&name.as_str()))
            .collect::<BTreeMap<_, _>>(),
        cwd,
        package,
        crate_name,
        crate_types,
        profile: request.target.profile.clone(),
    };
    if is_recorded_binary {
        invocation.extra_args = BINARY_EXTRA_ARGS.map(String::from).to_vec();
    }
    let store = Store::open(&request.store);
    let invocation_file = store.record_invocation(&invocation)?;
    if is_recorded_binary {
        let link = LinkRequest {
            store: request.store.clone(),
            target: request.target.clone(),
            real_linker: real_linker(&invocation.args),
            capture_only: false,
            revision_id: None,
            invocation: Some(invocation_file),
            libraries: local_libraries(&store, &request.target.profile)?,
        };
        command.env(LINK_REQUEST_ENV, link.to_env_value());
    }
    command.args(invocation.compiler_args(&current_exe()?));
    Ok(command)
}

/// The local libraries compiled so far in `profile` (cargo compiles a binary's dependencies
/// before it), with the rlib each compiled to.
fn local_libraries(store: &Store, profile: &str) -> Result<Vec<LocalLibrary>> {
    Ok(store
        .invocations()?
        .into_iter()
        .filter(|invocation| invocation.is_library() && invocation.profile == profile)
        .map(|invocation| LocalLibrary {
            rlib: invocation.rlib_in(&invocation.out_dir()),
            crate_name: invocation.crate_name,
        })
        .collect())
}

/// The linker the user or cargo configured (`-C linker=…`), else `cc` like rustc.
pub fn real_linker(rustc_args: &[String]) -> String {
    let mut linker = "cc".to_owned();
    let mut iter = rustc_args.iter();
    while let Some(arg) = iter.next() {
        let codegen_option = match arg.as_str() {
            "-C" | "--codegen" => iter.next().map(String::as_str),
            other => other
                .strip_prefix("-C")
                .or_else(|| other.strip_prefix("--codegen=")),
        };
        if let Some(value) = codegen_option.and_then(|option| option.strip_prefix("linker=")) {
            linker = value.to_owned();
        }
    }
    linker
}

fn collect_flag_values(args: &[String], flag: &str) -> Vec<String> {
    args.windows(2)
        .filter(|pair| pair[0] == flag)
        .map(|pair| pair[1].clone())
        .collect()
}

/// The positional `*.rs` argument: the crate root.
fn crate_root(args: &[String]) -> Option<&str> {
    const TAKES_VALUE: [&str; 6] = ["--out-dir", "-L", "--extern", "-o", "--crate-name", "--cfg"];
    args.iter()
        .enumerate()
        .find(|(i, arg)| {
            arg.ends_with(".rs")
                && !arg.starts_with('-')
                && (*i == 0 || !TAKES_VALUE.contains(&args[i - 1].as_str()))
        })
        .map(|(_, arg)| arg.as_str())
}

/// This executable: the compiler is told to use it as the linker.
pub fn current_exe() -> Result<PathBuf> {
    std::env::current_exe()
        .context(|| "could not find the path of the running hotpatch executable".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn real_linker_honours_every_spelling_last_wins() {
        assert_eq!(real_linker(&strings(&["--crate-name", "x"])), "cc");
        assert_eq!(
            real_linker(&strings(&["-C", "linker=clang", "-Copt-level=0"])),
            "clang"
        );
        assert_eq!(
            real_linker(&strings(&["-Clinker=a", "--codegen=linker=b"])),
            "b"
        );
    }

    #[test]
    fn crate_root_is_the_positional_source_file() {
        let args = strings(&[
            "--crate-name",
            "app",
            "--edition=2021",
            "src/main.rs",
            "--out-dir",
            "x.rs",
        ]);
        assert_eq!(crate_root(&args), Some("src/main.rs"));
    }
}
