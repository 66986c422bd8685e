//! A service compiled from a schema's text by the generator's library, as the in-process
//! tests run it: the runtime's `Service` of the schema's `spec.json`, serving the OpenAPI
//! document the generator writes for it (which `InProcess` holds every answer to).

use lithair_runtime::Service;
use serde_json::Value;

/// The service of the schema `text` (named `file` in its diagnostics), and its OpenAPI
/// document. A schema with problems panics with every diagnostic.
pub fn service(file: &str, text: &str) -> (Service, Value) {
    let schema = lithair_gen::schema::check(text).unwrap_or_else(|d| {
        panic!(
            "{}",
            lithair_gen::schema::render_diagnostics(file, text, &d, false)
        )
    });
    let spec = serde_json::to_string(&schema).expect("spec.json");
    let document = lithair_gen::render::openapi::document(&schema);
    let served = serde_json::to_string(&document).expect("openapi.json");
    let service = Service::from_spec_json(&spec)
        .expect("spec")
        .with_openapi(Box::leak(served.into_boxed_str()));
    (service, document)
}
