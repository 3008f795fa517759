//! The contract between the pieces of hotpatch, spelled once.
//!
//! The `#[hotreload]` macro writes code and registry entries, the `hotreload` runtime reads
//! them in the running program, and the `hotpatch` CLI reads them again in compiled objects,
//! talks to the runtime over a socket and reports to tools. Each side used to spell the parts
//! it shares with the others; a change on one side then compiled fine and broke at run time.
//! Everything they must agree on lives here instead:
//!
//! - [`slot`]: the implementation function's name and the registry entries' layout;
//! - [`hash`]: the one hash behind signature fingerprints and image checksums;
//! - [`protocol`]: the messages between `hotpatch` and the runtime's agent;
//! - [`events`]: what `hotpatch run --message-format json` prints, for tools to parse.
//!
//! Light on purpose (serde only): the proc-macro and the runtime both depend on it.

pub mod events;
pub mod hash;
pub mod protocol;
pub mod slot;
