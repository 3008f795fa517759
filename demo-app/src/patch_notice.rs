//! The "patched (generation N)" notice, fed by `hotreload::on_patch`.

use hotreload::PatchEvent;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long the notice stays on screen after a patch.
const SHOWN_FOR: Duration = Duration::from_secs(3);

/// The latest notice and when it arrived.
static LATEST: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Starts recording a notice for every applied patch; with `echo_to_stderr` it is also printed
/// there (for plain output, whose stdout lines must keep one format).
pub fn listen(echo_to_stderr: bool) {
    hotreload::on_patch(move |event| {
        let text = describe(event);
        if echo_to_stderr {
            eprintln!("demo-app: {text}");
        }
        *LATEST.lock().unwrap_or_else(PoisonError::into_inner) = Some((text, Instant::now()));
    });
}

/// The notice to show now, if a patch landed recently.
pub fn current() -> Option<String> {
    let latest = LATEST.lock().unwrap_or_else(PoisonError::into_inner);
    let (text, arrived) = latest.as_ref()?;
    (arrived.elapsed() < SHOWN_FOR).then(|| text.clone())
}

fn describe(event: &PatchEvent) -> String {
    let mut changed: Vec<String> = event
        .rewired
        .iter()
        .map(|path| path.strip_prefix("demo_app::").unwrap_or(path).to_owned())
        .collect();
    match event.entries {
        0 => {}
        1 => changed.push("1 function".into()),
        n => changed.push(format!("{n} functions")),
    }
    format!(
        "patched (generation {}): {}",
        event.generation,
        changed.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_generation_and_the_functions() {
        let event = PatchEvent {
            generation: 3,
            rewired: vec!["demo_app::colour::ball_colour", "demo_app::physics::step"],
            entries: 2,
        };
        assert_eq!(
            describe(&event),
            "patched (generation 3): colour::ball_colour, physics::step, 2 functions"
        );
    }
}
