//! Where a type is declared. rustc's DWARF gives types no `DW_AT_decl_file`/`decl_line`
//! (only `-Zdebug-info-type-line-numbers` would), so the file is that of the functions and
//! statics of the type's module, and the line is found by reading that file.

/// The 1-based line of the first `struct`, `enum` or `union` item named like the last
/// segment of `type_path` (generic arguments ignored) in `source`.
pub(super) fn declaration_line(source: &str, type_path: &str) -> Option<usize> {
    let without_generics = type_path.split('<').next()?;
    let name = without_generics.rsplit("::").next()?;
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return None;
    }
    source
        .lines()
        .position(|line| declares(line, name))
        .map(|index| index + 1)
}

fn declares(line: &str, name: &str) -> bool {
    let code = line.split("//").next().unwrap_or_default();
    let words: Vec<&str> = code
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|word| !word.is_empty())
        .collect();
    words
        .windows(2)
        .any(|pair| matches!(pair[0], "struct" | "enum" | "union") && pair[1] == name)
}

#[cfg(test)]
mod tests {
    use super::declaration_line;

    #[test]
    fn finds_the_item_not_its_mentions() {
        let source = "use x::Ball;\n// struct Ball in a comment\nfn f(b: Ball) {}\n\n#[derive(Debug)]\npub struct Ball {\n    x: f32,\n}\npub(crate) enum State<T> { A(T) }\n";
        assert_eq!(declaration_line(source, "demo::physics::Ball"), Some(6));
        assert_eq!(declaration_line(source, "demo::State<demo::Ball>"), Some(9));
        assert_eq!(declaration_line(source, "demo::Balloon"), None);
        assert_eq!(
            declaration_line(source, "demo::main::{closure_env#0}"),
            None
        );
    }
}
