//! Problems found in a schema, and how they are shown: `file:line:col: message`, a code
//! frame with a caret under the culprit, and a hint such as `did you mean "max_length"?`.

use std::fmt::Write as _;

use super::yaml::Span;

/// One problem in a schema.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where it is.
    pub span: Span,
    /// What is wrong, as a sentence.
    pub message: String,
    /// What to do about it, if we can tell.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A problem at `span`.
    pub fn new(span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            span,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a hint.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// Adds `did you mean "x"?` when a near name exists.
    pub fn with_suggestion<'a>(
        self,
        given: &str,
        candidates: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        match did_you_mean(given, candidates) {
            Some(near) => self.with_help(format!("did you mean \"{near}\"?")),
            None => self,
        }
    }
}

/// The candidate closest to `given`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    given: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let given_lower = given.to_ascii_lowercase();
    let mut best: Option<(f64, &'a str)> = None;
    for c in candidates {
        let c_lower = c.to_ascii_lowercase();
        if c_lower == given_lower {
            return Some(c);
        }
        let distance = strsim::damerau_levenshtein(&given_lower, &c_lower);
        let limit = (c.chars().count().max(given.chars().count()) / 3).max(1) + 1;
        let similarity = strsim::jaro_winkler(&given_lower, &c_lower);
        let close = distance <= limit
            || similarity >= 0.88
            || (given_lower.len() >= 3 && c_lower.starts_with(&given_lower));
        if close && best.is_none_or(|(s, _)| similarity > s) {
            best = Some((similarity, c));
        }
    }
    best.map(|(_, c)| c)
}

/// Styles for the terminal; all empty when colour is off.
struct Palette {
    error: anstyle::Style,
    location: anstyle::Style,
    gutter: anstyle::Style,
    help: anstyle::Style,
}

impl Palette {
    fn new(color: bool) -> Self {
        use anstyle::{AnsiColor, Style};
        if !color {
            return Palette {
                error: Style::new(),
                location: Style::new(),
                gutter: Style::new(),
                help: Style::new(),
            };
        }
        Palette {
            error: Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
            location: Style::new().bold(),
            gutter: Style::new().fg_color(Some(AnsiColor::Blue.into())),
            help: Style::new().fg_color(Some(AnsiColor::Cyan.into())),
        }
    }
}

/// Renders diagnostics in source order, each with a code frame.
pub fn render(file: &str, source: &str, diagnostics: &[Diagnostic], color: bool) -> String {
    let p = Palette::new(color);
    let lines: Vec<&str> = source.lines().collect();
    let mut out = String::new();
    for d in diagnostics {
        let line = d.span.start.line;
        let col = d.span.start.col;
        let _ = writeln!(
            out,
            "{loc}{file}:{line}:{col}:{loc:#} {err}error:{err:#} {msg}",
            loc = p.location,
            err = p.error,
            msg = d.message
        );
        if let Some(text) = line.checked_sub(1).and_then(|i| lines.get(i)) {
            let number = line.to_string();
            let pad = " ".repeat(number.len());
            let available = text.chars().count().saturating_sub(col - 1).max(1);
            let width = d.span.width.clamp(1, available);
            let _ = writeln!(out, "{g}{pad} |{g:#}", g = p.gutter);
            // A tab is one column to the parser: show it as one space so the caret lines up.
            let text = text.replace('\t', " ");
            let _ = writeln!(out, "{g}{number} |{g:#} {text}", g = p.gutter);
            let _ = writeln!(
                out,
                "{g}{pad} |{g:#} {}{e}{}{e:#}",
                " ".repeat(col - 1),
                "^".repeat(width),
                g = p.gutter,
                e = p.error
            );
        }
        if let Some(help) = &d.help {
            let _ = writeln!(out, "  {h}= help:{h:#} {help}", h = p.help);
        }
    }
    let n = diagnostics.len();
    let _ = writeln!(
        out,
        "{e}{n} error{s}{e:#} in {file}; nothing was written.",
        e = p.error,
        s = if n == 1 { "" } else { "s" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names() {
        let keys = ["min_length", "max_length", "pattern", "min", "max"];
        assert_eq!(did_you_mean("max_len", keys), Some("max_length"));
        assert_eq!(did_you_mean("patern", keys), Some("pattern"));
        assert_eq!(did_you_mean("colour", keys), None);
    }
}
