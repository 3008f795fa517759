//! The ball's colour. The trail fades from it, so a change shows all over the screen.

use hotreload::hotreload;

/// Red, green, blue of the ball, 0–255 each.
#[hotreload]
pub fn ball_colour() -> (u8, u8, u8) {
    (255, 80, 0) // <- try changing this
}
