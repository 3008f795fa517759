//! A bevy_ecs world of three movers, and a schedule run 50 times a second: `tick` counts
//! ticks, `movement` moves each mover by its velocity, `report` prints every 10th tick
//! `tick=T movers=N positions=P,P,P`. Run it under `hotpatch run` and edit `movement` while it
//! runs: the movers go on from where they are, the new way.

use bevy_ecs::prelude::*;
use std::time::Duration;

#[derive(Component)]
struct Position(i64);

#[derive(Component)]
struct Velocity(i64);

/// Ticks run so far.
#[derive(Resource, Default)]
struct Ticks(u64);

fn tick(mut ticks: ResMut<Ticks>) {
    ticks.0 += 1;
}

/// The system to edit while it runs: how each mover moves in one tick.
fn movement(mut movers: Query<(&mut Position, &Velocity)>) {
    for (mut position, velocity) in &mut movers {
        position.0 += velocity.0;
    }
}

fn report(ticks: Res<Ticks>, movers: Query<(&Position, &Velocity)>) {
    if !ticks.0.is_multiple_of(10) {
        return;
    }
    // In the order of their velocities (1, 2, 3), whatever order the query has.
    let mut movers: Vec<(i64, i64)> = movers.iter().map(|(p, v)| (v.0, p.0)).collect();
    movers.sort_unstable();
    let positions: Vec<String> = movers.iter().map(|(_, p)| p.to_string()).collect();
    println!(
        "tick={} movers={} positions={}",
        ticks.0,
        movers.len(),
        positions.join(",")
    );
}

fn main() {
    let mut world = World::new();
    world.init_resource::<Ticks>();
    for velocity in 1..=3 {
        world.spawn((Position(0), Velocity(velocity)));
    }
    let mut schedule = Schedule::default();
    schedule.add_systems((tick, movement, report).chain());
    loop {
        schedule.run(&mut world);
        std::thread::sleep(Duration::from_millis(20));
    }
}
