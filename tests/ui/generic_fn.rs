#[hotreload::hotreload]
fn largest<T: PartialOrd + Copy>(items: &[T]) -> T {
    items[0]
}
fn main() {}
