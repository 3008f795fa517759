//! The `hotreload` runtime as a shared library: `hotpatch run` preloads it (`LD_PRELOAD`) into a
//! program that does not link the runtime itself, so any binary crate can be patched unchanged.
//!
//! Linking the runtime is all it takes: its agent starts from the runtime's own `.init_array`
//! constructor, exactly as in a program that depends on `hotreload`, and finding itself
//! preloaded it takes its entry out of `LD_PRELOAD` so the program's children don't inherit it.

use hotreload as _;
