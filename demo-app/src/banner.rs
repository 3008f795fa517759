//! The headline above the arena, and the last field of each plain line.

use hotreload::hotreload;

/// The text shown above the arena.
#[hotreload]
pub fn banner() -> String {
    let greeting = "Hello from demo-app"; // <- try changing this
    greeting.to_string()
}
