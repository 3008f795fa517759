struct Ball;
impl Ball {
    #[hotreload::hotreload]
    fn bounce(&self) -> u32 {
        1
    }
}
fn main() {}
