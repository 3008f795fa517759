//! Everything that moves: the ball, its trail, the coin and the "+1" where a coin was taken.

use crate::physics::{self, Arena, Ball};
use crate::score::{self, Coin, SCORE};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;

/// The arena, in cells: the terminal area is one cell wider and taller (both edges included).
pub const ARENA: Arena = Arena {
    width: 59.0,
    height: 17.0,
};

/// How many past ball positions the trail remembers.
const TRAIL_LENGTH: usize = 24;
/// How long a "+1" stays where a coin was taken.
const SPARKLE_FRAMES: u32 = 20;

/// A "+1" floating where the ball just took a coin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sparkle {
    pub x: f32,
    pub y: f32,
    pub frames_left: u32,
}

/// The moving parts of the demo. Counters live in statics elsewhere; this is what gets drawn.
#[derive(Debug, Clone, PartialEq)]
pub struct World {
    pub ball: Ball,
    /// Oldest position first.
    pub trail: VecDeque<(f32, f32)>,
    pub coin: Coin,
    pub sparkle: Option<Sparkle>,
}

impl World {
    /// A ball thrown from the top-left corner, and the coin for the current score.
    pub fn new() -> World {
        World {
            ball: Ball {
                x: 2.0,
                y: 2.0,
                vx: 14.0,
                vy: 0.0,
            },
            trail: VecDeque::with_capacity(TRAIL_LENGTH),
            coin: Coin::for_score(SCORE.load(Ordering::Relaxed), &ARENA),
            sparkle: None,
        }
    }

    /// Moves everything on by `dt` seconds.
    pub fn advance(&mut self, dt: f32) {
        if self.trail.len() == TRAIL_LENGTH {
            self.trail.pop_front();
        }
        self.trail.push_back((self.ball.x, self.ball.y));
        physics::step(&mut self.ball, &ARENA, dt);

        self.sparkle = self.sparkle.and_then(|sparkle| {
            let frames_left = sparkle.frames_left.checked_sub(1)?;
            Some(Sparkle {
                frames_left,
                ..sparkle
            })
        });
        let taken = self.coin;
        if score::collect(&self.ball, &mut self.coin, &ARENA) {
            self.sparkle = Some(Sparkle {
                x: taken.x,
                y: taken.y,
                frames_left: SPARKLE_FRAMES,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trail_follows_the_ball_and_stays_short() {
        let mut world = World::new();
        for _ in 0..100 {
            world.advance(1.0 / 30.0);
        }
        assert_eq!(world.trail.len(), TRAIL_LENGTH);
        assert_ne!(world.trail.back(), Some(&(world.ball.x, world.ball.y)));
    }
}
