//! Link: rewrite the planned objects so they bind to the running instances of statics and
//! thread-locals, and link them into an image at a fixed address near the executable.

pub mod image;
pub mod rewrite;
