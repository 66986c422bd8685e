//! What of a Rust file's text is layout: the hash that tells a hand edit from a reformat.
//!
//! [`normalize`] keeps everything a person writes — tokens, string and char literals as
//! written, and every comment (its words; the spaces and line breaks inside it are
//! layout) — and drops what a formatter changes: whitespace between tokens (one space is
//! kept where two words would otherwise run together) and the trailing commas rustfmt
//! adds or removes (before a closing bracket, and after a block's closing brace). So
//! `cargo fmt` (or any re-indentation) leaves the hash as it was, and appending a
//! comment changes it.

use super::manifest::sha256;

/// sha256 of the file's text without its layout ([`normalize`]).
pub fn layout_sha256(text: &str) -> String {
    sha256(normalize(text).as_bytes())
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The text without its layout (see the module doc).
pub fn normalize(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    // Whitespace was skipped since the last character written.
    let mut gap = false;
    let push = |out: &mut String, gap: &mut bool, c: char| {
        if *gap && out.chars().last().is_some_and(is_word) && is_word(c) {
            out.push(' ');
        }
        *gap = false;
        out.push(c);
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c.is_whitespace() {
            gap = true;
            i += 1;
            continue;
        }
        // Comments: kept, with their inner whitespace reduced to single spaces.
        if c == '/' && (next == Some('/') || next == Some('*')) {
            let (end, body) = if next == Some('/') {
                let end = chars[i..]
                    .iter()
                    .position(|c| *c == '\n')
                    .map_or(chars.len(), |p| i + p);
                (end, &chars[i..end])
            } else {
                let mut depth = 0usize;
                let mut j = i;
                while j < chars.len() {
                    if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                        depth += 1;
                        j += 2;
                    } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                        depth -= 1;
                        j += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        j += 1;
                    }
                }
                (j, &chars[i..j.min(chars.len())])
            };
            out.push('\u{1}');
            let words: String = body.iter().collect();
            out.push_str(&words.split_whitespace().collect::<Vec<_>>().join(" "));
            out.push('\u{1}');
            gap = false;
            i = end;
            continue;
        }
        // Raw strings (`r"…"`, `r#"…"#`, `br#"…"#`): kept as written.
        if c == 'r' && !out.chars().last().is_some_and(is_word) || (c == 'b' && next == Some('r')) {
            let start = if c == 'b' { i + 1 } else { i };
            let mut j = start + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) == Some(&'"') {
                let close: Vec<char> = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let mut k = j + 1;
                while k < chars.len() && !chars[k..].starts_with(&close) {
                    k += 1;
                }
                let end = (k + close.len()).min(chars.len());
                for ch in &chars[i..end] {
                    push(&mut out, &mut gap, *ch);
                }
                i = end;
                continue;
            }
        }
        // Strings: kept as written, escapes and all.
        if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                if chars[j] == '\\' {
                    j += 1;
                }
                j += 1;
            }
            let end = (j + 1).min(chars.len());
            for ch in &chars[i..end] {
                push(&mut out, &mut gap, *ch);
            }
            i = end;
            continue;
        }
        // A char literal (`'a'`, `'\n'`), not a lifetime (`'a`).
        if c == '\'' {
            let literal_end = match (next, chars.get(i + 2)) {
                (Some('\\'), _) => chars[i + 2..]
                    .iter()
                    .position(|c| *c == '\'')
                    .map(|p| i + 2 + p + 1),
                (Some(_), Some('\'')) => Some(i + 3),
                _ => None,
            };
            if let Some(end) = literal_end {
                for ch in &chars[i..end.min(chars.len())] {
                    push(&mut out, &mut gap, *ch);
                }
                i = end;
                continue;
            }
        }
        // A trailing comma as formatters write it: before a closing bracket, or after a
        // block's closing brace (a match arm).
        if c == ',' {
            let ahead = chars[i + 1..].iter().find(|c| !c.is_whitespace());
            let closes = matches!(ahead, Some(')' | ']' | '}'));
            if closes || out.ends_with('}') {
                i += 1;
                continue;
            }
        }
        push(&mut out, &mut gap, c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn layout_goes_and_everything_else_stays() {
        let a = "fn f(a: u8, b: u8) -> u8 {\n    // add them\n    a + b\n}\n";
        let reindented =
            "fn f(\n  a: u8,\n  b: u8,\n) -> u8 {\n  //   add\n  //   them\n  a + b\n}";
        assert_ne!(
            normalize(a),
            normalize(reindented),
            "a comment split in two lines is another comment"
        );
        let same = "fn f(\n        a: u8,\n        b: u8,\n) -> u8\n{\n        // add   them\n        a+b\n}\n\n";
        assert_eq!(normalize(a), normalize(same));
        assert_ne!(normalize(a), normalize(&format!("{a}// my note\n")));
        assert_ne!(normalize(a), normalize(&a.replace("add them", "add both")));
        assert_ne!(normalize(a), normalize(&a.replace("a + b", "a - b")));
        // Words stay apart; strings and chars keep their spaces.
        assert_ne!(normalize("let x = y;"), normalize("letx = y;"));
        assert_ne!(normalize(r#"s("a b")"#), normalize(r#"s("ab")"#));
        assert_ne!(normalize("c(' ')"), normalize("c('_')"));
        assert_eq!(normalize("f::<'a>(x)"), normalize("f::< 'a >( x )"));
        assert_ne!(normalize(r##"r#"a  b"#"##), normalize(r##"r#"a b"#"##));
        // Match arms with or without the comma after a block.
        assert_eq!(
            normalize("match x { A => {}, B => {} }"),
            normalize("match x {\n    A => {}\n    B => {}\n}")
        );
        assert_eq!(
            normalize("/* a /* nested */ b */ x"),
            normalize("/*  a  /* nested */\n b */\nx")
        );
    }
}
