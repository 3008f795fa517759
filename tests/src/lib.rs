//! Fixtures shared by the end-to-end tests.
pub mod fixture;
#[cfg(test)]
// Each fixture is a whole program: its `main` and helpers are dead code as a module.
#[allow(dead_code)]
mod fixture_programs;
pub mod image;
pub mod live;
