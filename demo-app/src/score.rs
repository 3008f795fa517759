//! The coin the ball chases and the score it earns.

use crate::physics::{Arena, Ball};
use std::sync::atomic::{AtomicU64, Ordering};

/// Coins collected since start. Public and global on purpose: it is program state that a
/// patch must leave alone.
pub static SCORE: AtomicU64 = AtomicU64::new(0);

/// How close (in cells) the ball must come to take the coin.
const REACH: f32 = 1.5;

/// A coin waiting somewhere in the arena.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Coin {
    pub x: f32,
    pub y: f32,
}

impl Coin {
    /// The coin for the given score: each score has its own place, so runs are repeatable.
    pub fn for_score(score: u64, arena: &Arena) -> Coin {
        let (a, b) = scatter(score);
        Coin {
            x: 2.0 + a * (arena.width - 4.0),
            y: 2.0 + b * (arena.height - 4.0),
        }
    }
}

/// If the ball touches `coin`, adds a point and moves the coin on; says whether it did.
pub fn collect(ball: &Ball, coin: &mut Coin, arena: &Arena) -> bool {
    let (dx, dy) = (ball.x - coin.x, ball.y - coin.y);
    if dx * dx + dy * dy > REACH * REACH {
        return false;
    }
    let score = SCORE.fetch_add(1, Ordering::Relaxed) + 1;
    *coin = Coin::for_score(score, arena);
    true
}

/// Two numbers in `0..1` that look random but depend only on `seed` (a 64-bit mix).
fn scatter(seed: u64) -> (f32, f32) {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    let unit = |bits: u64| (bits & 0xFFFF) as f32 / 65_536.0;
    (unit(z), unit(z >> 32))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ARENA: Arena = Arena {
        width: 60.0,
        height: 18.0,
    };

    #[test]
    fn coins_land_inside_the_arena_and_move_around() {
        let coins: Vec<Coin> = (0..200).map(|s| Coin::for_score(s, &ARENA)).collect();
        for coin in &coins {
            assert!((2.0..=ARENA.width - 2.0).contains(&coin.x), "{coin:?}");
            assert!((2.0..=ARENA.height - 2.0).contains(&coin.y), "{coin:?}");
        }
        assert_ne!(coins[0], coins[1]);
    }

    #[test]
    fn touching_the_coin_scores_and_moves_it() {
        let mut coin = Coin { x: 10.0, y: 5.0 };
        let far = Ball {
            x: 30.0,
            y: 5.0,
            vx: 0.0,
            vy: 0.0,
        };
        assert!(!collect(&far, &mut coin, &ARENA));
        let before = SCORE.load(Ordering::Relaxed);
        let near = Ball { x: 10.5, ..far };
        assert!(collect(&near, &mut coin, &ARENA));
        assert!(SCORE.load(Ordering::Relaxed) > before);
        assert_ne!(coin, Coin { x: 10.0, y: 5.0 });
    }
}
