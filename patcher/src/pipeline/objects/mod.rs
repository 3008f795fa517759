//! Objects: what the compiled object files and the running executable define. Each object
//! file is read once per patch ([`cache`]) and serves every later stage: its named functions
//! and data (bytes + relocations), the types its DWARF describes, and its `#[hotreload]`
//! registry entries.

pub mod cache;
pub mod dwarf;
pub mod exe;
pub mod file;
pub mod registry;
pub mod symbols;
pub mod type_layout;
