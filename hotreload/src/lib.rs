//! hotreload runtime (being written).
pub mod protocol;
