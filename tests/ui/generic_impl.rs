struct Wrapper<T>(T);
#[hotreload::hotreload]
impl<T: Copy> Wrapper<T> {
    fn get(&self) -> T {
        self.0
    }
}
fn main() {}
