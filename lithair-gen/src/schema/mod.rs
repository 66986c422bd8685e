//! The YAML model language: reading, checking, describing.
//!
//! [`check`] turns a schema's text into the checked [`model::Schema`] or the full list
//! of [`Diagnostic`]s; [`language::json_schema`] describes the language for editors.

pub mod diagnostic;
pub mod keys;
pub mod language;
pub mod model;
pub mod names;
mod parse;
pub mod yaml;

pub use diagnostic::{render as render_diagnostics, Diagnostic};
pub use model::Schema;
pub use parse::check;
