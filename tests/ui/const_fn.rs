#[hotreload::hotreload]
const fn size() -> usize {
    4
}
fn main() {}
