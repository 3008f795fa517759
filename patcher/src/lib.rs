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

pub mod build;
pub mod capture;
pub mod cli;
pub mod connection;
pub mod diff;
pub mod events;
pub mod exe;
pub mod image;
pub mod layout;
pub mod object_file;
pub mod plan;
pub mod recompile;
pub mod registry;
pub mod report;
pub mod revision_spec;
pub mod rewrite;
pub mod roles;
pub mod run;
pub mod session;
pub mod symbols;
pub mod watch;
pub mod workspace;

pub use build::{build, BuildOutcome};
pub use cli::{CargoArgs, MessageFormat, OutputArgs, TargetSelection};
pub use diff::{demangle, diff, ChangeStatus, LayoutChange, SymbolChange, SymbolDiff};
pub use linker_shim::{
    Error, Result, Revision, RevisionId, RustcInvocation, Store, TargetKey, TargetKind,
};
pub use recompile::{recompile, RecompileError, Recompiled};
pub use revision_spec::RevisionSpec;
pub use symbols::{Definition, IndexedSymbol, SymbolIndex, SymbolKind};
pub use workspace::Workspace;
