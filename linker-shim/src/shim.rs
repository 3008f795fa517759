//! The linker role: rustc runs hotpatch as its linker (`-C linker=<hotpatch>`). The shim
//! copies the objects into a new revision, runs the real link unchanged, and commits the
//! revision only if the link succeeded.

use crate::build_id::read_build_id;
use crate::error::{Context, Error, Result};
use crate::invocation::RustcInvocation;
use crate::link_line::LinkLine;
use crate::revision::{RevisionId, TargetKey};
use crate::role_request::RoleRequest;
use crate::store::{RevisionRecord, Store};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitCode, ExitStatus};

/// Environment variable that carries a [`LinkRequest`] (JSON) from the rustc wrapper or the
/// patch builder to the shim. Its presence is what makes `hotpatch` act as a linker.
pub const LINK_REQUEST_ENV: &str = "HOTPATCH_LINK_REQUEST";

/// What the shim must do with the link it is given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRequest {
    /// Root of the revision store.
    pub store: PathBuf,
    pub target: TargetKey,
    /// The linker to run for real, normally `cc` (it reads rustc's `-fuse-ld=lld`).
    pub real_linker: String,
    /// Record the objects and skip the link (patch builds need only the objects).
    pub capture_only: bool,
    /// Id for the new revision, so whoever ran rustc can find it; fresh when absent.
    pub revision_id: Option<RevisionId>,
    /// JSON file with the rustc invocation to keep in the revision.
    pub invocation: Option<PathBuf>,
    /// Local library crates whose objects to record when their rlib is on the link line.
    #[serde(default)]
    pub libraries: Vec<LocalLibrary>,
}

/// A library crate of the user's (a workspace member or path dependency) and its rlib.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalLibrary {
    pub crate_name: String,
    pub rlib: PathBuf,
}

impl RoleRequest for LinkRequest {
    const ENV: &'static str = LINK_REQUEST_ENV;
}

/// Acts as the linker for `args` (everything after the program name) and returns the exit
/// code to exit with: the real linker's, or failure if the revision could not be recorded.
pub fn run_as_linker(request: &LinkRequest, args: &[OsString]) -> ExitCode {
    match record_and_link(request, args) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("error: hotpatch (acting as the linker): {error}");
            ExitCode::FAILURE
        }
    }
}

fn record_and_link(request: &LinkRequest, args: &[OsString]) -> Result<ExitCode> {
    let line = LinkLine::capture(&request.real_linker, args)?;
    let store = Store::open(&request.store);
    let mut writer = store.begin(
        request
            .revision_id
            .clone()
            .unwrap_or_else(RevisionId::new_now),
    )?;
    for object in line.objects() {
        writer.capture_object(&object)?;
    }
    let archives = line.archives();
    for library in &request.libraries {
        if archives.contains(&library.rlib) {
            writer.capture_library(&library.crate_name, &library.rlib)?;
        }
    }
    if !request.capture_only {
        let status = Command::new(&request.real_linker)
            .args(args)
            .env_remove(LINK_REQUEST_ENV)
            .status()
            .context(|| format!("could not run the linker `{}`", request.real_linker))?;
        if !status.success() {
            return Ok(exit_code(status));
        }
    }
    let exe = line.output();
    let build_id = match (&exe, request.capture_only) {
        (Some(exe), false) => read_build_id(exe)?,
        _ => None,
    };
    let rustc = request
        .invocation
        .as_deref()
        .map(read_invocation)
        .transpose()?;
    writer.commit(RevisionRecord {
        target: request.target.clone(),
        capture_only: request.capture_only,
        link_line: line,
        exe,
        build_id,
        rustc,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn read_invocation(path: &std::path::Path) -> Result<RustcInvocation> {
    let text =
        std::fs::read_to_string(path).context(|| format!("could not read {}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::new(format!("could not parse {}: {e}", path.display())))
}

/// The exit code that reports `status` to our parent: the same code, or 128 + signal.
fn exit_code(status: ExitStatus) -> ExitCode {
    let code = status
        .code()
        .or(status.signal().map(|signal| 128 + signal))
        .unwrap_or(1);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
