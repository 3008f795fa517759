//! The process's own memory map: where code may be, so a patch never points a slot or writes a
//! jump outside executable memory.

use std::ops::Range;

/// Address ranges mapped executable in this process, from `/proc/self/maps`.
pub(crate) fn executable_ranges() -> Vec<Range<u64>> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    maps.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (range, perms) = (fields.next()?, fields.next()?);
            if !perms.contains('x') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?)
        })
        .collect()
}
