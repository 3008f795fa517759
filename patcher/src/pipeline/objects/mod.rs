//! Objects: what the compiled object files and the running executable define. Indexes of
//! named functions and data (bytes + relocations), the `#[hotreload]` registry entries, and
//! the executable's symbol table.

pub mod exe;
pub mod file;
pub mod registry;
pub mod symbols;
