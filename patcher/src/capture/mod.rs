//! Capture: the base build. cargo builds the program with `hotpatch` as rustc wrapper and
//! linker; each crate's exact rustc invocation and the link's objects become a revision
//! that later patches are compiled against and diffed with.

pub mod build;
pub mod fit;
pub mod roles;
pub mod workspace;
pub(crate) mod wrapper;
