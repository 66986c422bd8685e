//! lithair-gen: from a YAML model definition to a complete Rust service crate.
//!
//! - [`schema`] reads and checks the YAML language, with diagnostics that point at the line.
//! - `render` turns a checked schema into files (handlebars templates, then `syn` +
//!   `prettyplease` for every generated `.rs`).
//! - `project` owns regeneration: the manifest of who owns each file, hand-edit detection,
//!   breaking-change detection against the previous schema.
//!
//! The binary (`main.rs`) only parses arguments and calls into this library.

pub mod project;
pub mod render;
pub mod schema;
