//! The `hotpatch` subcommands: their arguments and what each does.

pub mod revision_spec;
