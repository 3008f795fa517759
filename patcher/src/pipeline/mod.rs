//! The patch pipeline, one stage per module, in the order an edit goes through them:
//! recompile → objects → diff → plan → check → link. [`crate::session::Session::prepare`]
//! runs them.

pub mod check;
pub mod diff;
pub mod link;
pub mod objects;
pub mod plan;
pub mod recompile;
