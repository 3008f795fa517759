//! Linker shim and revision store of hotpatch.
//!
//! rustc deletes the object files of a binary right after linking it, yet a patch needs to
//! know exactly what the running executable was made of. So `hotpatch` stands in as the
//! linker: it records every object on the link line in a *revision* under
//! `<target-dir>/hotpatch/`, runs the real link unchanged and exits with its status.
//!
//! - [`run_as_linker`] is the linker role (the `hotpatch` binary calls it when
//!   [`LINK_REQUEST_ENV`] is set, so one installed binary is the whole tool);
//! - [`Store`] lists, loads, pins and prunes revisions;
//! - [`Revision`] is one link: objects, link line, executable, build-id, rustc invocation.

mod build_id;
mod error;
mod invocation;
mod link_line;
mod pool;
mod revision;
mod role_request;
mod shim;
mod store;

pub use build_id::read_build_id;
pub use error::{Context, Error, Result};
pub use invocation::{flag_value, RustcInvocation};
pub use link_line::{expand_response_files, CargoLinkEnv, LinkLine};
pub use revision::{CapturedLibrary, CapturedObject, Revision, RevisionId, TargetKey, TargetKind};
pub use role_request::RoleRequest;
pub use shim::{run_as_linker, LinkRequest, LocalLibrary, LINK_REQUEST_ENV};
pub use store::{RevisionRecord, RevisionWriter, Store, KEEP_PER_TARGET};

/// Milliseconds since the Unix epoch (revision ids and timestamps).
pub(crate) fn now_unix_ms() -> u64 {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since_epoch.map_or(0, |d| d.as_millis() as u64)
}
