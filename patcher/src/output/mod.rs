//! What hotpatch prints: events of `hotpatch run`, and the results of `build`, `diff` and
//! `revisions`, as aligned human lines or JSON lines for tools, and where `run`'s lines go.

pub mod events;
pub mod report;
pub mod status;
