//! demo-app: a bouncing ball to hot-patch. Run it under `hotpatch run`, edit the marked line in
//! `colour.rs`, `physics.rs` or `banner.rs`, save, and watch the running animation change while
//! its counters keep counting (see README.md).

mod banner;
mod colour;
mod options;
mod patch_notice;
mod physics;
mod render;
mod score;
mod terminal;
mod ticker;
mod world;

use options::{Command, Options, USAGE};
use render::Frame;
use std::io::{self, IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};
use terminal::Screen;
use world::World;

fn main() -> ExitCode {
    let options = match options::parse(std::env::args().skip(1)) {
        Ok(Command::Run(options)) => options,
        Ok(Command::Help) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(error) => {
            eprintln!("demo-app: {error}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(options) {
        Ok(()) => ExitCode::SUCCESS,
        // Whoever read our output stopped (`| head`): nothing left to do.
        Err(error) if error.kind() == io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo-app: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The frame loop: patches land at the top of a frame, then the world moves and is shown.
fn run(options: Options) -> io::Result<()> {
    terminal::stop_on_interrupt()?;
    let on_terminal = io::stdout().is_terminal();
    // Patches wait for `safe_point`, so the three hot functions always change together,
    // between two frames.
    hotreload::set_mode(hotreload::Mode::SafePoint);
    patch_notice::listen(!on_terminal);

    let period = Duration::from_secs(1) / options.fps;
    let dt = period.as_secs_f32();
    ticker::start(period);
    let mut screen = if on_terminal {
        Some(Screen::enter()?)
    } else {
        None
    };
    let mut world = World::new();
    let mut frame_number: u64 = 0;
    let mut next_frame = Instant::now();

    while options.frames.is_none_or(|last| frame_number < last) && !terminal::interrupted() {
        hotreload::safe_point();
        frame_number += 1;
        world.advance(dt);
        let banner = banner::banner();
        let frame = Frame {
            number: frame_number,
            score: score::SCORE.load(Ordering::Relaxed),
            bounces: physics::bounces(),
            ticks: ticker::ticks(),
            generation: hotreload::generation(),
            colour: colour::ball_colour(),
            banner: &banner,
            world: &world,
        };
        match &mut screen {
            Some(screen) => {
                screen.show(&render::picture(&frame, patch_notice::current().as_deref()))?
            }
            None => {
                let mut stdout = io::stdout().lock();
                writeln!(stdout, "{}", render::plain_line(&frame))?;
                stdout.flush()?;
            }
        }

        next_frame += period;
        match next_frame.checked_duration_since(Instant::now()) {
            Some(wait) => thread::sleep(wait),
            // Running late (a stall, a slow terminal): carry on from now, don't race to catch up.
            None => next_frame = Instant::now(),
        }
    }
    Ok(())
}
