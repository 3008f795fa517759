struct Ball;
#[hotreload::hotreload]
impl Ball {
    fn bounce(&self) -> u32 {
        1
    }
    fn convert<T: From<u32>>(&self) -> T {
        T::from(1)
    }
}
fn main() {}
