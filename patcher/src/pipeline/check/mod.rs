//! Check: whether a planned patch is safe for the running program's data. Type layouts from
//! DWARF.

pub mod layout;
