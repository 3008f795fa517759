//! `#[hotreload]` accepts free functions, inherent and trait methods, receivers, references
//! and lifetimes, and the expanded functions behave exactly like the originals.

use hotreload::hotreload;

#[hotreload]
fn add(a: u32, b: u32) -> u32 {
    a + b
}

#[hotreload]
pub fn longest<'a>(x: &'a str, y: &'a str) -> &'a str {
    if x.len() >= y.len() {
        x
    } else {
        y
    }
}

#[hotreload]
fn first_word(text: &str) -> &str {
    text.split(' ').next().unwrap_or("")
}

#[hotreload]
fn swap_in_place((a, b): &mut (i32, i32)) {
    std::mem::swap(a, b);
}

#[hotreload]
unsafe fn read_through(pointer: *const u64) -> u64 {
    // SAFETY: the test passes a pointer to a live u64.
    unsafe { *pointer }
}

#[hotreload]
extern "C" fn c_abi_double(x: i64) -> i64 {
    x * 2
}

#[hotreload]
fn early_return(values: &[i32]) -> Result<i32, String> {
    let first = values.first().ok_or("empty")?;
    if *first < 0 {
        return Err(format!("negative: {first}"));
    }
    Ok(first * 10)
}

#[derive(Debug, Default)]
struct Counter {
    count: u64,
    name: String,
}

#[hotreload]
impl Counter {
    fn new(name: &str) -> Self {
        Self {
            count: 0,
            name: name.to_string(),
        }
    }

    fn bump(&mut self, by: u64) -> u64 {
        self.count += by;
        self.count
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn pick<'a>(&'a self, other: &'a str) -> &'a str {
        if other.len() > self.name.len() {
            other
        } else {
            self.name()
        }
    }

    fn into_count(self: Box<Self>) -> u64 {
        self.count
    }

    fn renamed(mut self, name: &str) -> Self {
        self.name = name.to_string();
        Self::with_count(self.count, &self.name)
    }

    fn with_count(count: u64, name: &str) -> Self {
        Counter {
            count,
            name: name.into(),
        }
    }

    #[hotreload(skip)]
    fn generic_stays_plain<T: Into<u64>>(&mut self, value: T) {
        self.count = value.into();
    }
}

trait Shape {
    type Unit;
    fn area(&self) -> f64;
    fn scale(&mut self, by: f64);
    fn unit(&self) -> Self::Unit;
}

struct Square(f64);

#[hotreload]
impl Shape for Square {
    type Unit = &'static str;

    fn area(&self) -> f64 {
        self.0 * self.0
    }

    fn scale(&mut self, by: f64) {
        self.0 *= by;
    }

    fn unit(&self) -> Self::Unit {
        "m²"
    }
}

#[test]
fn free_functions_behave() {
    assert_eq!(add(2, 3), 5);
    assert_eq!(longest("abc", "de"), "abc");
    assert_eq!(first_word("hello world"), "hello");
    let mut pair = (1, 2);
    swap_in_place(&mut pair);
    assert_eq!(pair, (2, 1));
    let value = 42u64;
    // SAFETY: `value` is a live u64.
    assert_eq!(unsafe { read_through(&value) }, 42);
    assert_eq!(c_abi_double(21), 42);
    assert_eq!(early_return(&[4]), Ok(40));
    assert_eq!(early_return(&[-1]), Err("negative: -1".to_string()));
    assert_eq!(early_return(&[]), Err("empty".to_string()));
}

#[test]
fn inherent_methods_behave() {
    let mut counter = Counter::new("ab");
    assert_eq!(counter.bump(2), 2);
    assert_eq!(counter.bump(3), 5);
    assert_eq!(counter.name(), "ab");
    assert_eq!(counter.pick("xyz"), "xyz");
    assert_eq!(counter.pick("x"), "ab");
    counter.generic_stays_plain(7u8);
    let counter = counter.renamed("cd");
    assert_eq!((counter.count, counter.name.as_str()), (7, "cd"));
    assert_eq!(Box::new(counter).into_count(), 7);
}

#[test]
fn trait_methods_behave() {
    let mut square = Square(3.0);
    assert_eq!(square.area(), 9.0);
    square.scale(2.0);
    assert_eq!(square.area(), 36.0);
    assert_eq!(square.unit(), "m²");
    let shape: &dyn Shape<Unit = &'static str> = &square;
    assert_eq!(shape.area(), 36.0);
}

#[test]
fn every_slot_starts_at_its_original() {
    let slots = hotreload::slots();
    assert!(slots.len() >= 14, "{} slots", slots.len());
    for entry in slots {
        assert_eq!(entry.slot.current(), entry.original.get(), "{}", entry.path);
    }
}
