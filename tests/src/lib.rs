//! Fixtures shared by the end-to-end tests.
pub mod fixture;
pub mod image;
pub mod live;
