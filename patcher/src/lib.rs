//! The hotpatch library.
pub use hotreload::protocol;
