//! What the end-to-end tests and `hotpatch-bench` share to drive hotpatch for real:
//!
//! - [`checkout`]: this checkout, its cargo, and its `hotpatch` binary built on demand;
//! - [`session`]: a running `hotpatch run --message-format json` — hotpatch's events and the
//!   program's stdout lines, each read on its own thread, waited for with a patience;
//! - [`fixture`]: small standalone cargo packages to run under it, edited the way editors
//!   save (atomically);
//! - [`process`]: a process's memory and descriptors, and a patch image's pages.
//!
//! Errors are the workspace's [`linker_shim::Error`]: the bench reports them, tests panic with
//! them.

pub mod checkout;
pub mod fixture;
pub mod process;
pub mod session;
