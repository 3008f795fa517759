//! The ball and how it moves: gravity, walls, bounces. `step` is the function to edit.

use hotreload::hotreload;
use std::sync::atomic::{AtomicU64, Ordering};

/// Wall and floor hits since start. Private on purpose: only `step` touches it, so after a
/// patch the new `step` must keep counting in this very static, not in a fresh copy.
static BOUNCES: AtomicU64 = AtomicU64::new(0);

/// Position and velocity in arena cells (x right, y down), per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ball {
    pub x: f32,
    pub y: f32,
    pub vx: f32,
    pub vy: f32,
}

/// The box the ball lives in: `0..=width` by `0..=height` cells, floor at `height`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Arena {
    pub width: f32,
    pub height: f32,
}

/// How many times the ball has hit a wall, the floor or the ceiling.
pub fn bounces() -> u64 {
    BOUNCES.load(Ordering::Relaxed)
}

/// Advances `ball` by `dt` seconds and keeps it inside `arena`, whatever the constants say.
#[hotreload]
pub fn step(ball: &mut Ball, arena: &Arena, dt: f32) {
    const GRAVITY: f32 = 9.8; // <- try changing this
    const BOUNCINESS: f32 = 0.9;
    const TOP_SPEED: f32 = 200.0;

    ball.vy = (ball.vy + GRAVITY * dt).clamp(-TOP_SPEED, TOP_SPEED);
    ball.vx = ball.vx.clamp(-TOP_SPEED, TOP_SPEED);
    ball.x += ball.vx * dt;
    ball.y += ball.vy * dt;

    if ball.x < 0.0 || ball.x > arena.width {
        ball.x = mirror_into(ball.x, arena.width);
        ball.vx = -ball.vx;
        BOUNCES.fetch_add(1, Ordering::Relaxed);
    }
    if ball.y < 0.0 {
        ball.y = mirror_into(ball.y, arena.height);
        ball.vy = ball.vy.abs();
        BOUNCES.fetch_add(1, Ordering::Relaxed);
    }
    if ball.y > arena.height {
        ball.y = mirror_into(ball.y, arena.height);
        ball.vy = -ball.vy.abs() * BOUNCINESS;
        // A tired ball gets kicked back up, so the demo never comes to rest.
        let relaunch_speed = (2.0 * GRAVITY.abs() * arena.height).sqrt();
        if -ball.vy < relaunch_speed * 0.3 {
            ball.vy = -relaunch_speed;
        }
        BOUNCES.fetch_add(1, Ordering::Relaxed);
    }
}

/// Reflects `position` back into `0..=limit` off whichever edge it crossed, clamping if it
/// flew so far that one reflection is not enough.
fn mirror_into(position: f32, limit: f32) -> f32 {
    let reflected = if position < 0.0 {
        -position
    } else {
        2.0 * limit - position
    };
    reflected.clamp(0.0, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARENA: Arena = Arena {
        width: 60.0,
        height: 18.0,
    };

    fn inside(ball: &Ball) -> bool {
        (0.0..=ARENA.width).contains(&ball.x) && (0.0..=ARENA.height).contains(&ball.y)
    }

    #[test]
    fn stays_in_bounds_for_a_long_time_at_any_frame_rate() {
        for dt in [1.0 / 1000.0, 1.0 / 30.0, 0.5, 3.0] {
            let mut ball = Ball {
                x: 1.0,
                y: 1.0,
                vx: 14.0,
                vy: 0.0,
            };
            for _ in 0..10_000 {
                step(&mut ball, &ARENA, dt);
                assert!(inside(&ball), "escaped with dt={dt}: {ball:?}");
            }
        }
    }

    #[test]
    fn stays_in_bounds_when_thrown_absurdly_fast() {
        let mut ball = Ball {
            x: 30.0,
            y: 9.0,
            vx: -1.0e9,
            vy: 1.0e9,
        };
        step(&mut ball, &ARENA, 1.0);
        assert!(inside(&ball), "{ball:?}");
    }

    #[test]
    fn falls_and_counts_bounces() {
        let before = bounces();
        let mut ball = Ball {
            x: 30.0,
            y: 0.0,
            vx: 0.0,
            vy: 0.0,
        };
        step(&mut ball, &ARENA, 0.1);
        assert!(
            ball.y > 0.0 && ball.vy > 0.0,
            "gravity pulls down: {ball:?}"
        );
        for _ in 0..100 {
            step(&mut ball, &ARENA, 0.1);
        }
        assert!(bounces() > before, "it should have hit the floor");
    }

    #[test]
    fn never_comes_to_rest() {
        let mut ball = Ball {
            x: 30.0,
            y: ARENA.height,
            vx: 0.0,
            vy: 0.0,
        };
        let mut highest = ARENA.height;
        for _ in 0..3_000 {
            step(&mut ball, &ARENA, 1.0 / 30.0);
            highest = highest.min(ball.y);
        }
        assert!(highest < ARENA.height / 2.0, "kicked back up: {highest}");
    }
}
