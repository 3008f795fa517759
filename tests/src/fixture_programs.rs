//! The fixture programs of `tests/fixtures/`, compiled as modules of this crate's unit tests
//! (never run): so `cargo fmt` formats them and `cargo clippy` and `cargo test` check that they
//! build. The tests copy their text (`include_str!`) into temporary crates of their own.

#[path = "../fixtures/async_fns.rs"]
mod async_fns;
#[path = "../fixtures/attach.rs"]
mod attach;
#[path = "../fixtures/capture_diff.rs"]
mod capture_diff;
#[path = "../fixtures/consistency.rs"]
mod consistency;
#[path = "../fixtures/entry_stress.rs"]
mod entry_stress;
#[path = "../fixtures/every_caller.rs"]
mod every_caller;
#[path = "../fixtures/late_answer.rs"]
mod late_answer;
#[path = "../fixtures/layout_refusal.rs"]
mod layout_refusal;
#[path = "../fixtures/live_patching.rs"]
mod live_patching;
/// Never linked: its `main` (dead code here) calls a symbol nothing defines.
#[path = "../fixtures/missing_symbol.rs"]
mod missing_symbol;
#[path = "../fixtures/moved.rs"]
mod moved;
#[path = "../fixtures/no_dependency.rs"]
mod no_dependency;
#[path = "../fixtures/recovery.rs"]
mod recovery;
#[path = "../fixtures/release_build.rs"]
mod release_build;
#[path = "../fixtures/soak.rs"]
mod soak;
#[path = "../fixtures/start_checks.rs"]
mod start_checks;
#[path = "../fixtures/stress.rs"]
mod stress;
#[path = "../fixtures/third_party.rs"]
mod third_party;
#[path = "../fixtures/tiny_entry.rs"]
mod tiny_entry;
#[path = "../fixtures/type_layouts.rs"]
mod type_layouts;

// The crates of the workspace fixtures; a crate reaches its dependency as a sibling module.
#[path = "../fixtures/workspace/app.rs"]
mod app;
#[path = "../fixtures/workspace/chain_app.rs"]
mod chain_app;
#[path = "../fixtures/workspace/chain_core.rs"]
mod corelib;
#[path = "../fixtures/workspace/outside_extra.rs"]
mod extra;
#[path = "../fixtures/workspace/game.rs"]
mod game;
#[path = "../fixtures/workspace/chain_mid.rs"]
mod mid;
#[path = "../fixtures/workspace/outside_app.rs"]
mod outside_app;
#[path = "../fixtures/workspace/chain_side.rs"]
mod side;
