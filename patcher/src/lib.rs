//! The hotpatch library: capture builds, diff revisions, link patches, deliver them to the
//! running program.
//!
//! The capture side (this crate's first half):
//! - [`build()`] builds an executable through cargo with `hotpatch` as rustc wrapper and
//!   linker, and returns its [`Revision`] (objects, link line, build-id, rustc invocation);
//! - [`recompile()`] re-runs one crate's recorded rustc invocation, capture-only, for a patch;
//! - [`diff()`] / [`SymbolDiff`] say which functions and data an edit changed, and who refers
//!   to them;
//! - [`Store`] (from `linker-shim`) lists, loads, pins and prunes revisions.
pub use hotreload_abi::protocol;

pub mod capture;
pub mod commands;
mod leftovers;
mod output;
pub mod pipeline;
mod run;
mod session;

pub use capture::build::{build, BuildOutcome};
pub use capture::workspace::Workspace;
pub use commands::args::{CargoArgs, MessageFormat, OutputArgs, TargetSelection};
pub use commands::revision_spec::RevisionSpec;
pub use linker_shim::{
    Error, Result, Revision, RevisionId, RustcInvocation, Store, TargetKey, TargetKind,
};
pub use pipeline::diff::{demangle, diff, ChangeStatus, LayoutChange, SymbolChange, SymbolDiff};
pub use pipeline::objects::symbols::{Definition, IndexedSymbol, SymbolIndex, SymbolKind};
pub use pipeline::recompile::{recompile, RecompileError, Recompiled};
