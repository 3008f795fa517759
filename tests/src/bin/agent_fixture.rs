//! A program for the agent tests: answers commands on stdin, one line each, so a test can
//! watch what its `#[hotreload]` functions return while it patches them over the socket.

use hotreload::hotreload;
use std::io::BufRead;

#[hotreload]
fn word() -> &'static str {
    "old"
}

#[hotreload]
fn other_word() -> &'static str {
    "new"
}

#[hotreload]
fn number(x: u64) -> u64 {
    x
}

fn main() {
    hotreload::on_patch(|event| {
        println!(
            "on_patch generation={} rewired={}",
            event.generation,
            event.rewired.join(",")
        )
    });
    for command in std::io::stdin().lock().lines() {
        match command.expect("stdin").as_str() {
            "word" => println!("word={} number={}", word(), number(1)),
            "threads" => println!(
                "threads={}",
                std::fs::read_dir("/proc/self/task")
                    .expect("procfs")
                    .count()
            ),
            "safe-point-mode" => {
                hotreload::set_mode(hotreload::Mode::SafePoint);
                println!("mode=safe-point");
            }
            "safe-point" => {
                hotreload::safe_point();
                println!("safe-point generation={}", hotreload::generation());
            }
            other => println!("unknown command {other}"),
        }
    }
}
