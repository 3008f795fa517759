//! Turning a frame into text: a coloured picture for terminals, one `key=value` line otherwise.

use crate::world::{World, ARENA};
use std::fmt::Write;

/// Red, green, blue.
type Rgb = (u8, u8, u8);

/// Everything one frame shows.
pub struct Frame<'a> {
    /// Frames drawn so far, this one included.
    pub number: u64,
    pub score: u64,
    pub bounces: u64,
    pub ticks: u64,
    /// Patches applied so far (`hotreload::generation()`).
    pub generation: u64,
    pub colour: Rgb,
    pub banner: &'a str,
    pub world: &'a World,
}

/// The frame as one line of `key=value` fields. `banner` comes last because it may contain
/// spaces: it runs to the end of the line.
pub fn plain_line(frame: &Frame) -> String {
    let (red, green, blue) = frame.colour;
    format!(
        "frame={} score={} bounces={} ticks={} generation={} colour={red},{green},{blue} x={:.2} y={:.2} banner={}",
        frame.number,
        frame.score,
        frame.bounces,
        frame.ticks,
        frame.generation,
        frame.world.ball.x,
        frame.world.ball.y,
        frame.banner,
    )
}

const COLUMNS: usize = ARENA.width as usize + 1;
const ROWS: usize = ARENA.height as usize + 1;
const COIN_COLOUR: Rgb = (255, 215, 0);
const BORDER_COLOUR: Rgb = (90, 90, 110);
const HINT: &str = "edit the marked line in demo-app/src/colour.rs and save · Ctrl-C quits";

/// The frame as a picture made of ANSI escapes; `notice` replaces the hint line.
pub fn picture(frame: &Frame, notice: Option<&str>) -> String {
    let mut cells: Vec<Option<(char, Rgb)>> = vec![None; COLUMNS * ROWS];
    let mut paint = |x: f32, y: f32, glyph: char, colour: Rgb| {
        let (column, row) = (x.round() as usize, y.round() as usize);
        if column < COLUMNS && row < ROWS {
            cells[row * COLUMNS + column] = Some((glyph, colour));
        }
    };
    let world = frame.world;
    let coin_glyph = if frame.number % 16 < 8 { '◆' } else { '◇' };
    paint(world.coin.x, world.coin.y, coin_glyph, COIN_COLOUR);
    let trail_length = world.trail.len();
    for (age_rank, &(x, y)) in world.trail.iter().enumerate() {
        let freshness = (age_rank + 1) as f32 / (trail_length + 1) as f32;
        let glyph = if freshness > 0.5 { '•' } else { '·' };
        paint(x, y, glyph, dimmed(frame.colour, freshness));
    }
    paint(world.ball.x, world.ball.y, '●', frame.colour);
    if let Some(sparkle) = world.sparkle {
        let rise = (20 - sparkle.frames_left.min(20)) as f32 / 10.0;
        paint(sparkle.x, sparkle.y - rise, '+', COIN_COLOUR);
        paint(sparkle.x + 1.0, sparkle.y - rise, '1', COIN_COLOUR);
    }

    let mut out = String::with_capacity(8 * 1024);
    out.push_str("  \x1b[1m");
    for (index, letter) in frame.banner.chars().enumerate() {
        out.push_str(&foreground(rainbow(frame.number, index)));
        out.push(letter);
    }
    out.push_str("\x1b[0m\x1b[K\n");

    let border = foreground(BORDER_COLOUR);
    let rule = "─".repeat(COLUMNS);
    let _ = writeln!(out, "{border}╭{rule}╮\x1b[0m\x1b[K");
    for row in cells.chunks(COLUMNS) {
        out.push_str(&border);
        out.push('│');
        for cell in row {
            match cell {
                Some((glyph, colour)) => {
                    out.push_str(&foreground(*colour));
                    out.push(*glyph);
                }
                None => out.push(' '),
            }
        }
        out.push_str(&border);
        out.push_str("│\x1b[0m\x1b[K\n");
    }
    let _ = writeln!(out, "{border}╰{rule}╯\x1b[0m\x1b[K");

    for (label, value) in [
        ("frame", frame.number),
        ("score", frame.score),
        ("bounces", frame.bounces),
        ("ticks", frame.ticks),
        ("generation", frame.generation),
    ] {
        let _ = write!(out, "  \x1b[2m{label}\x1b[0m \x1b[1m{value}\x1b[0m");
    }
    out.push_str("\x1b[K\n");
    match notice {
        Some(text) => {
            let _ = write!(out, "  \x1b[1;32m✔ {text}\x1b[0m\x1b[K");
        }
        None => {
            let _ = write!(out, "  \x1b[2m{HINT}\x1b[0m\x1b[K");
        }
    }
    out
}

/// The escape that sets the text colour to `colour` (24-bit).
fn foreground((red, green, blue): Rgb) -> String {
    format!("\x1b[38;2;{red};{green};{blue}m")
}

/// `colour` at `brightness` (0 dark, 1 as is).
fn dimmed((red, green, blue): Rgb, brightness: f32) -> Rgb {
    let scale = |channel: u8| (f32::from(channel) * brightness) as u8;
    (scale(red), scale(green), scale(blue))
}

/// A colour that drifts along the banner's letters and over time.
fn rainbow(frame: u64, letter: usize) -> Rgb {
    let phase = frame as f32 * 0.15 - letter as f32 * 0.35;
    let channel = |offset: f32| (160.0 + 95.0 * (phase + offset).sin()) as u8;
    (channel(0.0), channel(2.1), channel(4.2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::physics::Ball;

    fn world_at(x: f32, y: f32) -> World {
        let mut world = World::new();
        world.ball = Ball {
            x,
            y,
            vx: 0.0,
            vy: 0.0,
        };
        world
    }

    fn frame<'a>(world: &'a World, banner: &'a str) -> Frame<'a> {
        Frame {
            number: 120,
            score: 37,
            bounces: 12,
            ticks: 118,
            generation: 2,
            colour: (255, 80, 0),
            banner,
            world,
        }
    }

    #[test]
    fn plain_line_has_stable_keys_and_banner_last() {
        let world = world_at(12.345, 3.2);
        assert_eq!(
            plain_line(&frame(&world, "Hello from demo-app")),
            "frame=120 score=37 bounces=12 ticks=118 generation=2 colour=255,80,0 x=12.35 y=3.20 banner=Hello from demo-app"
        );
    }

    #[test]
    fn picture_has_a_fixed_size_and_shows_ball_banner_and_notice() {
        let world = world_at(10.0, 5.0);
        let picture = picture(&frame(&world, "Hi"), Some("patched (generation 2): banner"));
        assert_eq!(picture.lines().count(), 1 + ROWS + 2 + 2);
        assert!(picture.contains('●'));
        assert!(picture.contains("patched (generation 2)"));
        assert!(picture.contains("\x1b[38;2;255;80;0m●"));
        assert!(!picture.ends_with('\n'), "no scroll at the bottom");
    }
}
