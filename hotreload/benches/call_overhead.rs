//! What a call through a `#[hotreload]` slot costs over a direct call to the same body.
//!
//! `cargo bench -p hotreload` measures both in one run; with
//! `cargo bench -p hotreload --no-default-features` the attribute is compiled out and the two
//! should be indistinguishable.

use criterion::{criterion_group, criterion_main, Criterion};
use hotreload::hotreload;
use std::hint::black_box;

#[hotreload]
fn mix_through_slot(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555
}

#[inline(never)]
fn mix_direct(x: u64) -> u64 {
    x.wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17) ^ 0x5555
}

fn call_overhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("call");
    group.bench_function("direct #[inline(never)]", |b| {
        b.iter(|| mix_direct(black_box(7)))
    });
    group.bench_function("through #[hotreload] slot", |b| {
        b.iter(|| mix_through_slot(black_box(7)))
    });
    group.finish();
}

criterion_group!(benches, call_overhead);
criterion_main!(benches);
