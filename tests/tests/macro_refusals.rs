//! What `#[hotreload]` can't make a slot is refused at compile time, saying why.

#[test]
fn refused_items_fail_to_compile_with_the_reason() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("ui/*.rs");
}
