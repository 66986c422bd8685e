//! What an OpenAPI document says a service answers, for tests that hold every answer to
//! it: the document's path templates, each with its operations and their status codes.
//! [`InProcess`](super::InProcess) checks each answer it reads against the document its
//! service serves, and the end-to-end tests do the same for a built binary, so a route or a
//! status the document leaves out fails the test that meets it.

use std::collections::BTreeMap;

use serde_json::Value;

/// A document's routes.
#[derive(Debug, Clone)]
pub struct Described {
    routes: Vec<Route>,
}

#[derive(Debug, Clone)]
struct Route {
    template: String,
    segments: Vec<Segment>,
    /// Upper-case method → the status codes its `responses` name (`200`, `4XX`, `default`).
    operations: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    Parameter,
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Described {
    /// Reads the `paths` of an OpenAPI document.
    pub fn of(doc: &Value) -> Described {
        let mut routes = Vec::new();
        if let Some(paths) = doc.get("paths").and_then(Value::as_object) {
            for (template, item) in paths {
                let segments = template
                    .split('/')
                    .skip(1)
                    .map(|s| {
                        if s.starts_with('{') && s.ends_with('}') {
                            Segment::Parameter
                        } else {
                            Segment::Literal(s.to_string())
                        }
                    })
                    .collect();
                let operations = METHODS
                    .iter()
                    .filter_map(|m| {
                        let op = item.get(*m)?;
                        let codes = op
                            .get("responses")
                            .and_then(Value::as_object)
                            .map(|r| r.keys().cloned().collect())
                            .unwrap_or_default();
                        Some((m.to_ascii_uppercase(), codes))
                    })
                    .collect();
                routes.push(Route {
                    template: template.clone(),
                    segments,
                    operations,
                });
            }
        }
        Described { routes }
    }

    /// The template `path` (without its query) falls under: of those that match, the one
    /// with the most literal segments.
    pub fn route(&self, path: &str) -> Option<&str> {
        self.matching(path).map(|r| r.template.as_str())
    }

    fn matching(&self, path: &str) -> Option<&Route> {
        let path = path.split('?').next().unwrap_or(path);
        let parts: Vec<&str> = path.split('/').skip(1).collect();
        self.routes
            .iter()
            .filter(|r| {
                r.segments.len() == parts.len()
                    && r.segments.iter().zip(&parts).all(|(s, p)| match s {
                        Segment::Literal(l) => l == p,
                        Segment::Parameter => !p.is_empty(),
                    })
            })
            .max_by_key(|r| {
                r.segments
                    .iter()
                    .filter(|s| matches!(s, Segment::Literal(_)))
                    .count()
            })
    }

    /// Whether the document describes answering `method path` with `status` (`/_raft/*`,
    /// the nodes' own protocol, is outside the document and always passes): the path is
    /// one of its routes (or the answer is a 404 for a path it does not have), the method is
    /// one of the route's operations (or the answer is a 405), and the status is one of the
    /// operation's responses. A HEAD is held to its GET. Answers why not.
    pub fn check(&self, method: &str, path: &str, status: u16) -> Result<(), String> {
        // The nodes' own protocol, not part of the API the document describes.
        if path.starts_with("/_raft/") {
            return Ok(());
        }
        let Some(route) = self.matching(path) else {
            return if status == 404 {
                Ok(())
            } else {
                Err(format!(
                    "{method} {path} was answered {status}, and the document has no such path"
                ))
            };
        };
        let method = method.to_ascii_uppercase();
        let op = route.operations.get(&method).or_else(|| {
            (method == "HEAD")
                .then(|| route.operations.get("GET"))
                .flatten()
        });
        let Some(codes) = op else {
            return if status == 405 {
                Ok(())
            } else {
                Err(format!(
                    "{method} {path} was answered {status}, and the document has no {method} on {}",
                    route.template
                ))
            };
        };
        let exact = status.to_string();
        let range = format!("{}XX", status / 100);
        if codes
            .iter()
            .any(|c| *c == exact || c.eq_ignore_ascii_case(&range) || c == "default")
        {
            Ok(())
        } else {
            Err(format!(
                "{method} {path} was answered {status}, which the document does not list for {method} {} (it lists {})",
                route.template,
                codes.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Described {
        Described::of(&json!({"paths": {
            "/api/items": {"get": {"responses": {"200": {}, "4XX": {}}}, "post": {"responses": {"201": {}}}},
            "/api/items/{id}": {"get": {"responses": {"200": {}, "404": {}}}},
            "/api/items/_feed": {"get": {"responses": {"200": {}}}},
        }}))
    }

    #[test]
    fn a_literal_segment_is_preferred_to_a_parameter() {
        let d = doc();
        assert_eq!(d.route("/api/items/_feed"), Some("/api/items/_feed"));
        assert_eq!(d.route("/api/items/42?x=1"), Some("/api/items/{id}"));
        assert_eq!(d.route("/api/items/"), None);
        assert_eq!(d.route("/api/other"), None);
    }

    #[test]
    fn statuses_methods_and_unknown_paths_are_held_to_the_document() {
        let d = doc();
        assert!(d.check("GET", "/api/items", 200).is_ok());
        assert!(d.check("GET", "/api/items", 422).is_ok(), "4XX covers it");
        assert!(
            d.check("HEAD", "/api/items/1", 404).is_ok(),
            "HEAD is held to GET"
        );
        assert!(d.check("GET", "/api/items/1", 500).is_err());
        assert!(d.check("POST", "/api/items", 400).is_err());
        assert!(d.check("DELETE", "/api/items", 405).is_ok());
        assert!(d.check("DELETE", "/api/items", 404).is_err());
        assert!(d.check("GET", "/nowhere", 404).is_ok());
        assert!(d.check("GET", "/nowhere", 200).is_err());
        assert!(d.check("GET", "/_raft/events", 200).is_ok());
    }
}
