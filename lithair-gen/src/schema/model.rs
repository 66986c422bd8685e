//! The checked model (from the `lithair-spec` crate, shared with the runtime).

pub use lithair_spec::*;
