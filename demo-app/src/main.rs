fn main() { println!("demo-app: placeholder until the demo issue"); }
