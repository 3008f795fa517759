//! `examples/ecs` (bevy_ecs): the `movement` system is edited while the schedule runs. The
//! world keeps its entities, its tick count and their positions; from the next tick on, every
//! mover moves the new way.

use std::path::Path;
use std::time::Instant;
use testkit::session::Event;
use tests::examples::start_example;
use tests::live::{field, number};

#[test]
fn an_edited_system_moves_the_same_entities_the_new_way_from_where_they_were() {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let mut session = start_example(base, "ecs", &[]);
    let program = session.pid;

    // Each mover i (velocity i) has moved i a tick.
    let before = session.line_where(|line| number(line, "tick") >= 30);
    let tick = number(&before, "tick") as i64;
    assert_eq!(positions(&before), [tick, 2 * tick, 3 * tick], "{before}");

    let saved = Instant::now();
    let patch = session.edit(
        "        position.0 += velocity.0;\n",
        "        position.0 -= velocity.0;\n",
    );
    let Event::PatchApplied { ms, .. } = &patch else {
        panic!("not patch-applied: {patch:?}")
    };
    // The first line since they turned back (one printed just before the patch may come
    // first).
    let first = session.line_where(|line| positions(line)[0] < number(line, "tick") as i64);
    let shown = saved.elapsed();
    let next = session.line_where(|_| true);
    assert_eq!(session.pid, program, "the same process");

    // The same world: three movers, the tick count going on.
    for line in [&first, &next] {
        assert_eq!(number(line, "movers"), 3, "{line}");
    }
    assert!(
        number(&first, "tick") > tick as u64,
        "{first} continues {before}"
    );
    assert_eq!(number(&next, "tick"), number(&first, "tick") + 10, "{next}");
    // They turned back together, at one tick: each is still at its velocity times one `k`,
    // short of where going on would have taken it.
    let [one, two, three] = positions(&first);
    let first_tick = number(&first, "tick") as i64;
    assert!(one > 0 && [two, three] == [2 * one, 3 * one], "{first}");
    // And now move back by their velocity each tick: 10 ticks between two lines.
    let moved: Vec<i64> = positions(&next)
        .iter()
        .zip(positions(&first))
        .map(|(next, first)| next - first)
        .collect();
    assert_eq!(moved, [-10, -20, -30], "{first} then {next}");
    eprintln!(
        "movement system patched at tick ~{first_tick}: applied in {} ms (rustc {}), new positions printed {} ms after the save",
        ms.total,
        ms.rustc,
        shown.as_millis()
    );
}

/// The positions of `tick=T movers=N positions=A,B,C`, in the order of velocities 1, 2, 3.
fn positions(line: &str) -> [i64; 3] {
    let positions: Vec<i64> = field(line, "positions")
        .split(',')
        .map(|p| p.parse().expect("a position"))
        .collect();
    positions.try_into().expect("three positions")
}
