//! A YAML document as a tree whose every node knows where it stands in the source.
//!
//! serde_yaml reports the position of the first error only. Diagnostics here must list
//! every problem at once with `file:line:column`, so the schema is first read into this
//! tree (from yaml-rust2's event stream, which carries a marker for each event) and then
//! checked by hand in `parse.rs`.

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A position in the source: 1-based line, 1-based column (in characters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
}

/// Where a node stands and how many characters it covers on its first line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// The first character of the node.
    pub start: Pos,
    /// How many characters the caret under it should cover (at least 1).
    pub width: usize,
}

/// One node of the tree.
#[derive(Clone, Debug)]
pub struct Node {
    /// What the node holds.
    pub kind: NodeKind,
    /// Where it stands.
    pub span: Span,
}

/// The three kinds of YAML node, with scalars kept as written.
#[derive(Clone, Debug)]
pub enum NodeKind {
    /// A scalar. `quoted` is true for quoted and block scalars, which are always strings.
    Scalar { value: String, quoted: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in source order.
    Map(Vec<(Node, Node)>),
}

/// A scalar read as a plain YAML 1.2 core-schema value.
#[derive(Clone, Debug, PartialEq)]
pub enum Scalar<'a> {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Anything else, or anything quoted.
    Str(&'a str),
}

impl Node {
    /// The scalar's text, if this is a scalar.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The scalar's value under the YAML core schema.
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        let NodeKind::Scalar { value, quoted } = &self.kind else {
            return None;
        };
        if *quoted {
            return Some(Scalar::Str(value));
        }
        Some(match value.as_str() {
            "" | "~" | "null" | "Null" | "NULL" => Scalar::Null,
            "true" | "True" | "TRUE" => Scalar::Bool(true),
            "false" | "False" | "FALSE" => Scalar::Bool(false),
            v => {
                if let Ok(i) = v.parse::<i64>() {
                    Scalar::Int(i)
                } else if looks_like_float(v) {
                    v.parse::<f64>()
                        .map(Scalar::Float)
                        .unwrap_or(Scalar::Str(v))
                } else {
                    Scalar::Str(v)
                }
            }
        })
    }

    /// A short name of the node's kind, for messages ("a mapping", "a list", "a number"...).
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
            NodeKind::Scalar { .. } => match self.scalar() {
                Some(Scalar::Null) => "nothing (null)",
                Some(Scalar::Bool(_)) => "a boolean",
                Some(Scalar::Int(_)) => "an integer",
                Some(Scalar::Float(_)) => "a number",
                _ => "a string",
            },
        }
    }

    /// The node converted to JSON (used for `default` values and for the previous schema).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value;
        match &self.kind {
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap_or_default().to_string(), v.to_json()))
                    .collect(),
            ),
            NodeKind::Scalar { .. } => match self.scalar() {
                Some(Scalar::Null) | None => Value::Null,
                Some(Scalar::Bool(b)) => Value::Bool(b),
                Some(Scalar::Int(i)) => Value::from(i),
                Some(Scalar::Float(f)) => serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .unwrap_or(Value::Null),
                Some(Scalar::Str(s)) => Value::String(s.to_string()),
            },
        }
    }
}

fn looks_like_float(v: &str) -> bool {
    let body = v.strip_prefix(['-', '+']).unwrap_or(v);
    matches!(body, ".inf" | ".Inf" | ".INF")
        || (body
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit() || c == '.')
            && body
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
}

/// A YAML syntax error, with its position.
#[derive(Clone, Debug)]
pub struct SyntaxError {
    /// Where the parser stopped.
    pub pos: Pos,
    /// What it said.
    pub message: String,
}

/// Reads a YAML document into a [`Node`] tree. An empty document reads as `None`.
pub fn parse(source: &str) -> Result<Option<Node>, SyntaxError> {
    let mut builder = Builder::default();
    let mut parser = Parser::new_from_str(source);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: pos_of(e.marker()),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root)
}

fn pos_of(m: &Marker) -> Pos {
    Pos {
        line: m.line(),
        col: m.col() + 1,
    }
}

/// Builds the tree from events; a stack holds the open collections.
#[derive(Default)]
struct Builder {
    stack: Vec<Open>,
    root: Option<Node>,
    anchors: std::collections::HashMap<usize, Node>,
    error: Option<SyntaxError>,
}

struct Open {
    node: Node,
    anchor: usize,
    /// For mappings: a key waiting for its value.
    pending_key: Option<Node>,
}

impl Builder {
    fn push_value(&mut self, node: Node, anchor: usize) {
        if anchor > 0 {
            self.anchors.insert(anchor, node.clone());
        }
        let Some(top) = self.stack.last_mut() else {
            if self.root.is_none() {
                self.root = Some(node);
            }
            return;
        };
        match &mut top.node.kind {
            NodeKind::Seq(items) => items.push(node),
            NodeKind::Map(entries) => match top.pending_key.take() {
                None => {
                    // yaml-rust2 marks a block mapping's start at its first `:`; start it at its first key.
                    if entries.is_empty() && node.span.start < top.node.span.start {
                        top.node.span.start = node.span.start;
                    }
                    top.pending_key = Some(node)
                }
                Some(key) => entries.push((key, node)),
            },
            NodeKind::Scalar { .. } => {}
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let start = pos_of(&mark);
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let quoted = !matches!(style, TScalarStyle::Plain);
                let extra = match style {
                    TScalarStyle::SingleQuoted | TScalarStyle::DoubleQuoted => 2,
                    _ => 0,
                };
                let first_line = value.lines().next().unwrap_or("");
                let width = (first_line.chars().count() + extra).max(1);
                let node = Node {
                    kind: NodeKind::Scalar { value, quoted },
                    span: Span { start, width },
                };
                self.push_value(node, anchor);
            }
            Event::SequenceStart(anchor, _) | Event::MappingStart(anchor, _) => {
                let kind = if matches!(ev, Event::SequenceStart(..)) {
                    NodeKind::Seq(Vec::new())
                } else {
                    NodeKind::Map(Vec::new())
                };
                self.stack.push(Open {
                    node: Node {
                        kind,
                        span: Span { start, width: 1 },
                    },
                    anchor,
                    pending_key: None,
                });
            }
            Event::SequenceEnd | Event::MappingEnd => {
                if let Some(open) = self.stack.pop() {
                    self.push_value(open.node, open.anchor);
                }
            }
            Event::Alias(id) => match self.anchors.get(&id).cloned() {
                Some(mut node) => {
                    node.span = Span { start, width: 1 };
                    self.push_value(node, 0);
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos: start,
                        message: "alias to an unknown anchor".into(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based() {
        let root = parse("a:\n  b: 1\n").unwrap().unwrap();
        let NodeKind::Map(entries) = &root.kind else {
            panic!("not a map")
        };
        let (_, inner) = &entries[0];
        let NodeKind::Map(inner) = &inner.kind else {
            panic!("not a map")
        };
        assert_eq!(inner[0].0.span.start, Pos { line: 2, col: 3 });
        assert_eq!(inner[0].1.scalar(), Some(Scalar::Int(1)));
    }

    #[test]
    fn quoted_numbers_are_strings() {
        let root = parse("x: '1'").unwrap().unwrap();
        let NodeKind::Map(entries) = &root.kind else {
            panic!("not a map")
        };
        assert_eq!(entries[0].1.scalar(), Some(Scalar::Str("1")));
        assert_eq!(entries[0].1.span.width, 3);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3").unwrap_err();
        assert!(err.pos.line >= 1);
    }
}
