//! The process's own memory map: where code may be, so a patch never points a slot or writes a
//! jump outside executable memory; and where threads' stacks may be, for the stack check.

use std::ops::Range;

/// Address ranges mapped executable in this process, from `/proc/self/maps`.
pub(crate) fn executable_ranges() -> Vec<Range<u64>> {
    ranges_where(|perms| perms.contains('x'))
}

/// Address ranges mapped readable and writable (every thread's stack is one of them), sorted.
pub(crate) fn writable_ranges() -> Vec<Range<u64>> {
    ranges_where(|perms| perms.starts_with("rw"))
}

/// The ranges of `/proc/self/maps` whose permissions (`rwxp`) satisfy `wanted`, in its order
/// (ascending addresses).
fn ranges_where(wanted: impl Fn(&str) -> bool) -> Vec<Range<u64>> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            if !wanted(perms) {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?)
        })
        .collect()
}
