use lithair_gen::render::{self, templates, RenderOptions};
use lithair_gen::schema::{check, render_diagnostics};

fn try_schema(label: &str, text: &str) {
    match check(text) {
        Err(d) => println!("== {label}: REJECTED\n{}", render_diagnostics("x.yaml", text, &d, false)),
        Ok(s) => {
            let t = templates::load(None).unwrap();
            match render::render(&s, &t, &RenderOptions { runtime_dependency: "x = 1".into() }) {
                Ok(files) => {
                    let mut paths: Vec<_> = files.iter().map(|f| f.path.clone()).collect();
                    let n = paths.len(); paths.dedup();
                    println!("== {label}: ACCEPTED and rendered ({} files, {} dup paths)", n, n - paths.len());
                }
                Err(e) => println!("== {label}: ACCEPTED but render failed: {e}"),
            }
        }
    }
}

#[test]
fn scratch() {
    let m = |models: &str| format!("service: {{ name: shop }}\nmodels:\n{models}");
    try_schema("enum value self", &m("  Product:\n    fields:\n      kind: { type: enum, values: [self, other] }\n"));
    try_schema("enum value Self_", &m("  Product:\n    fields:\n      kind: { type: enum, values: [a, b], default: a }\n"));
    try_schema("model Self", &m("  Self:\n    fields:\n      name: string\n"));
    try_schema("model Crate", &m("  Crate:\n    fields:\n      name: string\n"));
    try_schema("model String", &m("  String:\n    fields:\n      name: string\n"));
    try_schema("model Option", &m("  Option:\n    fields:\n      name: { type: string, optional: true }\n"));
    try_schema("model Value", &m("  Value:\n    fields:\n      data: json\n"));
    try_schema("models URL and Url", &m("  URL:\n    path: /api/a\n    fields:\n      name: string\n  Url:\n    path: /api/b\n    fields:\n      name: string\n"));
    try_schema("enum field hooks", &m("  Product:\n    fields:\n      hooks: { type: enum, values: [a, b] }\n"));
    try_schema("enum fields x1 and x_1", &m("  Product:\n    fields:\n      x1: { type: enum, values: [a] }\n      x_1: { type: enum, values: [b] }\n"));
    try_schema("field type keyword", &m("  Product:\n    fields:\n      type: { type: enum, values: [a] }\n"));
    try_schema("model Mod (snake mod)", &m("  Mod:\n    fields:\n      name: string\n"));
    try_schema("model Type (snake type)", &m("  Type:\n    fields:\n      name: string\n"));
    try_schema("model Handlers", &m("  Handlers:\n    fields:\n      name: string\n"));
    try_schema("action named hooks?", &m("  Product:\n    fields:\n      name: string\n    actions:\n      hooks: { method: POST, path: x }\n"));
    try_schema("action named name same as field", &m("  Product:\n    fields:\n      name: string\n    actions:\n      name: { method: POST, path: x }\n"));
    try_schema("description with */ and quotes", "service: { name: shop, description: \"a \\\"quoted\\\" */ thing\" }\nmodels:\n  Product:\n    description: \"line1\\n\\nline3 */ `x`\"\n    fields:\n      name: { type: string, description: \"has \\\"quotes\\\"\" }\n");
    try_schema("default with quote", &m("  Product:\n    fields:\n      name: { type: string, default: \"a\\\"b`c\" }\n"));
    try_schema("action path with history", &m("  Product:\n    fields:\n      name: string\n    actions:\n      h: { method: GET, path: \"{id}/history\" }\n"));
    try_schema("two actions same path diff method", &m("  Product:\n    fields:\n      name: string\n    actions:\n      a: { method: GET, path: \"x\" }\n      b: { method: POST, path: \"x\" }\n"));
    try_schema("action path equals crud: {id}", &m("  Product:\n    fields:\n      name: string\n    actions:\n      a: { method: GET, path: \"{id}\" }\n"));
    try_schema("service name with dash", "service: { name: my-shop }\nmodels:\n  P:\n    fields:\n      name: string\n");
    try_schema("service name 'main'", "service: { name: main }\nmodels:\n  P:\n    fields:\n      name: string\n");
    try_schema("int default 1.0", &m("  P:\n    fields:\n      n: { type: int, default: 1.0 }\n"));
    try_schema("float big int default", &m("  P:\n    fields:\n      n: { type: float, default: 10 }\n"));
    try_schema("int huge", &m("  P:\n    fields:\n      n: { type: int, default: 99999999999999999999 }\n"));
    try_schema("min on int float", &m("  P:\n    fields:\n      n: { type: int, validate: { min: 0.5, max: 0.7 } }\n"));
    try_schema("yaml anchors", "service: { name: shop }\nmodels:\n  P:\n    fields: &f\n      name: string\n  Q:\n    fields: *f\n");
    try_schema("yaml merge key", "service: { name: shop }\nmodels:\n  P:\n    fields:\n      base: &b { type: string }\n      other: { <<: *b, optional: true }\n");
    try_schema("model with only id-like path", &m("  P:\n    path: /api\n    fields:\n      name: string\n  Q:\n    path: /api/q\n    fields:\n      name: string\n"));
    try_schema("operations empty", &m("  P:\n    operations: []\n    fields:\n      name: string\n"));
    try_schema("permission role public only + list types", &m("  P:\n    permissions: { read: public }\n    fields:\n      name: string\n"));
    try_schema("unicode", &m("  Produit:\n    description: \"é\"\n    fields:\n      nom: { type: string, colour: red, validate: { patern: \"é\" } }\n"));
    try_schema("roles inherit cycle", "service: { name: shop }\nroles:\n  - { name: a, inherits: [b] }\n  - { name: b, inherits: [a] }\nmodels:\n  P:\n    fields:\n      name: string\n");
    try_schema("dup top keys", "service: { name: shop }\nmodels:\n  P:\n    fields:\n      name: string\nmodels:\n  Q:\n    fields:\n      name: string\n");
    try_schema("list<list>", &m("  P:\n    fields:\n      x: { type: \"list<list<int>>\" }\n"));
    try_schema("ref with space", &m("  P:\n    fields:\n      x: { type: \"ref< P >\" }\n"));
    try_schema("enum unicode value", &m("  P:\n    fields:\n      x: { type: enum, values: [\"a b\"] }\n"));
    try_schema("values on list<enum> ok", &m("  P:\n    fields:\n      x: { type: \"list<enum>\", values: [a, b], default: [a, c] }\n"));
}
