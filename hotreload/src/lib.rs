//! Runtime for in-place hot patching of running Rust programs.
//!
//! Mark functions with [`hotreload`] and run the program under `hotpatch run`: each saved edit
//! is compiled, linked and rewired into the *same* process, state intact. Without
//! `hotpatch run` the runtime is inert: no thread, no socket, one atomic load per call.
//!
//! ```
//! use hotreload::hotreload;
//!
//! #[hotreload]
//! fn greeting(name: &str) -> String {
//!     format!("hello, {name}")
//! }
//!
//! assert_eq!(greeting("world"), "hello, world");
//! hotreload::safe_point(); // once per frame: where patches land in `Mode::SafePoint`
//! ```
//!
//! The `enabled` feature (on by default) turns the machinery on; build with
//! `default-features = false` and `#[hotreload]` is the plain function, with zero cost.

#[cfg(feature = "enabled")]
mod agent;
pub mod consistency;
pub mod identity;
pub mod loader;
mod mappings;
mod patching;
mod redirect;
mod slot;
pub mod stop_world;

/// The messages between `hotpatch` and the agent (defined in `hotreload-abi`).
pub use hotreload_abi::protocol;
pub use hotreload_macro::hotreload;
pub use patching::{
    apply, apply_patch, generation, mode, on_patch, safe_point, set_mode, Applied, ApplyError,
    Mode, PatchEvent,
};
pub use redirect::{
    entry_containing, jmp_rel32, redirects, set_entries, set_entries_with, EntryChange, Redirect,
    RedirectError, RedirectReport, JMP_LEN, MAX_ATTEMPTS,
};
pub use slot::{slot_at, slot_named, slots, Slot, SlotEntry};
pub use stop_world::{with_other_threads_stopped, StopError, StoppedThread, StoppedThreads};

/// What `hotpatch run` would be told about this process right now (build-id, slots, …).
#[cfg(feature = "enabled")]
pub use agent::hello;

/// Used by the code `#[hotreload]` generates; not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::slot::{Slot, SlotEntry, SLOTS};
    pub use linkme;
}
