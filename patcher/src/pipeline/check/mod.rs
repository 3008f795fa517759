//! Check: whether a planned patch is safe for the running program — type layouts from DWARF
//! (old data meeting new code) and the signatures of rewired `#[hotreload]` functions.

pub mod layout;
pub mod signature;
