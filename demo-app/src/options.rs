//! Command-line options: `--frames N`, `--fps N`, `--help`.

use std::fmt;

/// Printed for `--help`, and on stderr for anything it does not describe.
pub const USAGE: &str = "\
usage: demo-app [--frames N] [--fps N]

  --frames N   exit (status 0) after N frames; default: run until Ctrl-C
  --fps N      frames per second, 1 to 1000; default: 30
  -h, --help   show this message

On a terminal it animates; otherwise it prints one key=value line per frame.";

/// How long and how fast the demo runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Stop after this many frames; `None` runs until interrupted.
    pub frames: Option<u64>,
    /// Target frame rate; the physics advances `1 / fps` seconds per frame.
    pub fps: u32,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            frames: None,
            fps: 30,
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Run(Options),
    Help,
}

/// Why the command line was refused; shown above the usage text.
#[derive(Debug, PartialEq, Eq)]
pub struct UsageError(String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, UsageError> {
    let mut options = Options::default();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "--frames" => options.frames = Some(number_after(&arg, args.next(), 0..=u64::MAX)?),
            "--fps" => {
                let fps = number_after(&arg, args.next(), 1..=1000)?;
                options.fps = u32::try_from(fps).expect("1..=1000 fits in u32");
            }
            _ => return Err(UsageError(format!("unknown argument `{arg}`"))),
        }
    }
    Ok(Command::Run(options))
}

fn number_after(
    flag: &str,
    value: Option<String>,
    allowed: std::ops::RangeInclusive<u64>,
) -> Result<u64, UsageError> {
    let value = value.ok_or_else(|| UsageError(format!("`{flag}` needs a number")))?;
    match value.parse::<u64>() {
        Ok(number) if allowed.contains(&number) => Ok(number),
        _ => Err(UsageError(format!(
            "`{flag} {value}`: expected a whole number from {} to {}",
            allowed.start(),
            allowed.end()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, UsageError> {
        parse(line.split_whitespace().map(String::from))
    }

    #[test]
    fn defaults_to_thirty_fps_forever() {
        assert_eq!(parse_str(""), Ok(Command::Run(Options::default())));
        assert_eq!(Options::default().fps, 30);
        assert_eq!(Options::default().frames, None);
    }

    #[test]
    fn reads_frames_and_fps() {
        assert_eq!(
            parse_str("--frames 40 --fps 120"),
            Ok(Command::Run(Options {
                frames: Some(40),
                fps: 120
            }))
        );
    }

    #[test]
    fn refuses_unknown_missing_and_out_of_range() {
        assert!(parse_str("--speed 3").is_err());
        assert!(parse_str("--frames").is_err());
        assert!(parse_str("--frames ten").is_err());
        assert!(parse_str("--fps 0").is_err());
        assert!(parse_str("--fps 1001").is_err());
    }

    #[test]
    fn help_wins() {
        assert_eq!(parse_str("--fps 10 --help"), Ok(Command::Help));
    }
}
