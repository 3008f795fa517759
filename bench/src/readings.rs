//! What the bench reads off the running programs: the CLOCK_REALTIME stamps they print, and
//! resident memory from `/proc`.

use linker_shim::{Error, Result};
use testkit::process::status_kib;
use testkit::session::field;

/// The `t=` of a `first-frame` or `first-call` line: CLOCK_REALTIME nanoseconds.
pub fn timestamp_ns(line: &str) -> Result<u128> {
    field(line, "t")
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| Error::new(format!("no `t=<ns>` in {line:?}")))
}

/// A process's resident set (`VmRSS`) and its peak (`VmHWM`), in KiB, from `/proc`.
pub fn resident_kib(pid: u32) -> Result<(u64, u64)> {
    Ok((status_kib(pid, "VmRSS:")?, status_kib(pid, "VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_and_timestamps_of_program_lines() {
        let line = "first-call site=bin version=3 t=1700000000123456789";
        assert_eq!(field(line, "version"), Some("3"));
        assert_eq!(timestamp_ns(line).unwrap(), 1_700_000_000_123_456_789);
        assert!(timestamp_ns("first-frame checksum=1").is_err());
    }

    #[test]
    fn own_resident_set_is_read() {
        let (rss, peak) = resident_kib(std::process::id()).unwrap();
        assert!(rss > 0 && peak >= rss);
    }
}
