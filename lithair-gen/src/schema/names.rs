//! Naming rules shared by the checks and the renderer: cases, plurals, Rust keywords.

use heck::{ToSnakeCase, ToUpperCamelCase};

/// Whether `s` is PascalCase (`Product`, `OrderItem`).
pub fn is_pascal(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase()) && chars.all(|c| c.is_ascii_alphanumeric())
}

/// Whether `s` is snake_case (`unit_price`).
pub fn is_snake(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !s.contains("__")
        && !s.ends_with('_')
}

/// `OrderItem` -> `order_item`.
pub fn snake(s: &str) -> String {
    s.to_snake_case()
}

/// `order_item` -> `OrderItem`.
pub fn pascal(s: &str) -> String {
    s.to_upper_camel_case()
}

/// English plural of a snake_case word (`category` -> `categories`).
pub fn plural(word: &str) -> String {
    let consonant_y = word.ends_with('y')
        && !word.ends_with("ay")
        && !word.ends_with("ey")
        && !word.ends_with("oy")
        && !word.ends_with("uy");
    if consonant_y {
        format!("{}ies", &word[..word.len() - 1])
    } else if ["s", "x", "z", "ch", "sh"]
        .iter()
        .any(|e| word.ends_with(e))
    {
        format!("{word}es")
    } else {
        format!("{word}s")
    }
}

/// Rust keywords that a field name may still use, written as a raw identifier (`r#type`).
pub const RAW_KEYWORDS: &[&str] = &[
    "as", "async", "await", "break", "const", "continue", "dyn", "else", "enum", "extern", "false",
    "fn", "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
    "return", "static", "struct", "trait", "true", "type", "unsafe", "use", "where", "while",
    "abstract", "become", "box", "do", "final", "gen", "macro", "override", "priv", "try",
    "typeof", "unsized", "virtual", "yield",
];

/// Keywords that cannot be identifiers at all, not even raw.
pub const FORBIDDEN_KEYWORDS: &[&str] = &["self", "super", "crate", "_"];

/// The Rust identifier for a snake_case name (`type` -> `r#type`).
pub fn rust_ident(name: &str) -> String {
    if RAW_KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_string()
    }
}

/// A Rust enum variant for an enum value (`in-progress` -> `InProgress`, `2xl` -> `V2xl`,
/// `self` -> `VSelf`: `Self` is a keyword).
pub fn variant(value: &str) -> String {
    let p = pascal(value);
    if p.is_empty() || p.starts_with(|c: char| c.is_ascii_digit()) || p == "Self" {
        format!("V{p}")
    } else {
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plurals() {
        assert_eq!(plural("product"), "products");
        assert_eq!(plural("category"), "categories");
        assert_eq!(plural("address"), "addresses");
        assert_eq!(plural("day"), "days");
        assert_eq!(plural("order_item"), "order_items");
    }

    #[test]
    fn cases() {
        assert!(is_pascal("OrderItem"));
        assert!(!is_pascal("order_item"));
        assert!(is_snake("unit_price"));
        assert!(!is_snake("unitPrice"));
        assert_eq!(variant("in-progress"), "InProgress");
        assert_eq!(variant("2xl"), "V2xl");
    }
}
