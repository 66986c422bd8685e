//! JWTs of an identity provider (`[auth.jwt]`): the algorithms HS256, RS256, ES256 and
//! EdDSA with real keys (`tests/keys`, throw-away), and every way a token is refused,
//! each with a 401 that says why. Through `Authenticator`, and once through the whole
//! in-process pipeline.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use lithair_runtime::auth::Authenticator;
use lithair_runtime::config::Config;
use lithair_runtime::spec::CompiledSpec;
use serde_json::{json, Value};

/// Roles `admin` (inherits `editor`) and `editor`.
const SPEC: &str = r#"{
  "service": {"name": "t"},
  "roles": [{"name": "editor", "inherits": []}, {"name": "admin", "inherits": ["editor"]}],
  "models": []
}"#;

fn keys() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(keys().join(name)).expect("test key")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// An authenticator of `[auth.jwt]` with `table` (TOML lines).
fn auth(table: &str) -> Result<Authenticator, String> {
    let text = format!("[auth.jwt]\n{table}\n");
    let config = Config::from_toml(&text, "lithair.toml").map_err(|e| e.to_string())?;
    let spec = CompiledSpec::from_json(SPEC).expect("spec");
    Authenticator::from_config(&config.auth, &spec, &keys()).map_err(|e| e.to_string())
}

fn claims() -> Value {
    json!({"sub": "alice", "iss": "https://id.example.com/", "aud": "shop",
        "exp": now() + 600, "roles": ["editor"]})
}

fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).expect("sign")
}

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(&key("rsa.key")).expect("rsa key")
}

/// The caller of `Bearer token`, or the 401's detail.
fn call(a: &Authenticator, token: &str) -> Result<(String, Vec<String>, bool), String> {
    match a.authenticate(Some(format!("Bearer {token}").as_bytes())) {
        Ok(p) => Ok((
            p.name.clone(),
            p.roles.clone(),
            p.effective.contains("editor"),
        )),
        Err(e) => {
            assert_eq!(e.status, 401, "{}", e.detail);
            Err(e.detail)
        }
    }
}

const CHECKS: &str = "issuer = \"https://id.example.com/\"\naudience = \"shop\"\n";

#[test]
fn every_algorithm_verifies_with_its_key() {
    let rs = auth(&format!(
        "{CHECKS}algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\""
    ))
    .unwrap();
    let t = sign(Algorithm::RS256, None, &claims(), &rsa());
    assert_eq!(
        call(&rs, &t),
        Ok(("alice".into(), vec!["editor".into()], true))
    );

    let es = auth(&format!(
        "{CHECKS}algorithms = [\"ES256\"]\npublic_key_file = \"ec.pub\""
    ))
    .unwrap();
    let ec = EncodingKey::from_ec_pem(&key("ec.key")).unwrap();
    assert!(call(&es, &sign(Algorithm::ES256, None, &claims(), &ec)).is_ok());

    let ed = auth(&format!(
        "{CHECKS}algorithms = [\"EdDSA\"]\npublic_key_file = \"ed.pub\""
    ))
    .unwrap();
    let edk = EncodingKey::from_ed_pem(&key("ed.key")).unwrap();
    assert!(call(&ed, &sign(Algorithm::EdDSA, None, &claims(), &edk)).is_ok());

    let secret = "an HS256 secret of at least thirty-two bytes";
    std::env::set_var("LITHAIR_TEST_JWT_SECRET", secret);
    let hs = auth(&format!(
        "{CHECKS}algorithms = [\"HS256\"]\nsecret_env = \"LITHAIR_TEST_JWT_SECRET\""
    ))
    .unwrap();
    let hk = EncodingKey::from_secret(secret.as_bytes());
    assert!(call(&hs, &sign(Algorithm::HS256, None, &claims(), &hk)).is_ok());
    let other = EncodingKey::from_secret(b"another secret of at least thirty-two bytes");
    let e = call(&hs, &sign(Algorithm::HS256, None, &claims(), &other)).unwrap_err();
    assert!(e.contains("bad signature"), "{e}");
}

#[test]
fn a_jwk_set_chooses_the_key_by_kid() {
    let a = auth(&format!(
        "{CHECKS}algorithms = [\"RS256\", \"ES256\", \"EdDSA\"]\njwks_file = \"jwks.json\""
    ))
    .unwrap();
    let rsa2 = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    assert!(call(
        &a,
        &sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa())
    )
    .is_ok());
    assert!(call(&a, &sign(Algorithm::RS256, Some("rsa-2"), &claims(), &rsa2)).is_ok());
    let ec = EncodingKey::from_ec_pem(&key("ec.key")).unwrap();
    assert!(call(&a, &sign(Algorithm::ES256, Some("ec-1"), &claims(), &ec)).is_ok());
    // Signed by rsa2 but naming rsa-1: a bad signature, whichever key would have fit.
    let e = call(&a, &sign(Algorithm::RS256, Some("rsa-1"), &claims(), &rsa2)).unwrap_err();
    assert!(e.contains("bad signature") && !e.contains("rsa-2"), "{e}");
    let e = call(
        &a,
        &sign(Algorithm::RS256, Some("rsa-9"), &claims(), &rsa()),
    )
    .unwrap_err();
    assert!(e.contains("unknown key id"), "{e}");
    let e = call(&a, &sign(Algorithm::RS256, None, &claims(), &rsa())).unwrap_err();
    assert!(e.contains("names no key id"), "{e}");
    // The EC key's id on an RS256 token.
    let e = call(&a, &sign(Algorithm::RS256, Some("ec-1"), &claims(), &rsa())).unwrap_err();
    assert!(e.contains("not for RS256"), "{e}");
}

#[test]
fn every_bad_token_is_a_401_that_says_why() {
    let a = auth(&format!(
        "{CHECKS}algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\nleeway_secs = 5"
    ))
    .unwrap();
    let with = |f: &dyn Fn(&mut serde_json::Map<String, Value>)| {
        let mut c = claims();
        f(c.as_object_mut().unwrap());
        sign(Algorithm::RS256, None, &c, &rsa())
    };
    let cases: Vec<(String, &str)> = vec![
        (
            with(&|c| {
                c.insert("exp".into(), json!(now() - 60));
            }),
            "expired",
        ),
        (
            with(&|c| {
                c.remove("exp");
            }),
            "no `exp` claim",
        ),
        (
            with(&|c| {
                c.insert("nbf".into(), json!(now() + 600));
            }),
            "not valid yet",
        ),
        (
            with(&|c| {
                c.insert("iss".into(), json!("https://evil.example/"));
            }),
            "wrong issuer",
        ),
        (
            with(&|c| {
                c.remove("iss");
            }),
            "no `iss` claim",
        ),
        (
            with(&|c| {
                c.insert("aud".into(), json!("other"));
            }),
            "wrong audience",
        ),
        (
            with(&|c| {
                c.remove("sub");
            }),
            "no `sub` claim",
        ),
        ("not-a-jwt".into(), "three parts"),
        ("a.b.c".into(), "malformed header"),
    ];
    for (token, says) in cases {
        let e = call(&a, &token).unwrap_err();
        assert!(e.contains(says), "{says}: {e}");
    }
    // Within the leeway: accepted.
    assert!(call(
        &a,
        &with(&|c| {
            c.insert("exp".into(), json!(now() - 2));
        })
    )
    .is_ok());
    // `alg: none`, unsigned.
    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims())
    );
    let e = call(&a, &none).unwrap_err();
    assert!(e.contains("alg none"), "{e}");
    // An algorithm not listed; and HS256 signed with the RSA public key as its secret
    // (the key confusion attack): refused before any key is tried.
    let es = EncodingKey::from_ec_pem(&key("ec.key")).unwrap();
    let e = call(&a, &sign(Algorithm::ES256, None, &claims(), &es)).unwrap_err();
    assert!(e.contains("ES256 is not accepted"), "{e}");
    let confused = EncodingKey::from_secret(&key("rsa.pub"));
    let e = call(&a, &sign(Algorithm::HS256, None, &claims(), &confused)).unwrap_err();
    assert!(e.contains("HS256 is not accepted"), "{e}");
    // A signature of another key.
    let other = EncodingKey::from_rsa_pem(&key("rsa2.key")).unwrap();
    let e = call(&a, &sign(Algorithm::RS256, None, &claims(), &other)).unwrap_err();
    assert!(e.contains("bad signature"), "{e}");
}

/// A verified token is remembered, but only until its `exp` (plus the leeway).
#[test]
fn a_remembered_token_still_expires() {
    let a =
        auth("algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\nleeway_secs = 0").unwrap();
    let c = json!({"sub": "eve", "exp": now() + 1});
    let t = sign(Algorithm::RS256, None, &c, &rsa());
    assert!(call(&a, &t).is_ok());
    assert!(call(&a, &t).is_ok(), "the second time from memory");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let e = call(&a, &t).unwrap_err();
    assert!(e.contains("expired"), "{e}");
}

#[test]
fn roles_come_from_the_claim_the_configuration_names() {
    let nested = auth("algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\nroles_claim = \"realm_access.roles\"\nsubject_claim = \"preferred_username\"").unwrap();
    let c = json!({"preferred_username": "bob", "exp": now() + 60,
        "realm_access": {"roles": ["admin", "offline_access"]}});
    // `offline_access` is not a role of the schema: ignored, not an error.
    let (name, roles, editor) = call(&nested, &sign(Algorithm::RS256, None, &c, &rsa())).unwrap();
    assert_eq!(
        (name.as_str(), roles, editor),
        ("bob", vec!["admin".to_string()], true)
    );
    // No roles claim: a caller with no role (public only).
    let c = json!({"preferred_username": "carol", "exp": now() + 60});
    let (_, roles, editor) = call(&nested, &sign(Algorithm::RS256, None, &c, &rsa())).unwrap();
    assert!(roles.is_empty() && !editor);
    // Without iss and aud configured, they are not checked.
    let c = json!({"preferred_username": "dan", "exp": now() + 60, "iss": "any", "aud": "any"});
    assert!(call(&nested, &sign(Algorithm::RS256, None, &c, &rsa())).is_ok());
}

#[test]
fn an_api_token_is_still_an_api_token() {
    let hash = "8e0ef0ab7b1ba7a7ab4ff1bc8d9bbb12e2432ee4bd04ebd4fa3e9d4b2c08c4b1";
    let text = format!(
        "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nroles = [\"editor\"]\n\n[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\n"
    );
    let config = Config::from_toml(&text, "lithair.toml").unwrap();
    let spec = CompiledSpec::from_json(SPEC).unwrap();
    let a = Authenticator::from_config(&config.auth, &spec, &keys()).unwrap();
    // An `lth_` value is looked up as an API token, never parsed as a JWT.
    let e = call(&a, "lth_not_configured").unwrap_err();
    assert_eq!(e, "unknown token");
}

#[test]
fn a_configuration_that_cannot_work_is_refused() {
    std::env::set_var("LITHAIR_TEST_SHORT_SECRET", "short");
    for (table, says) in [
        (
            "algorithms = []\npublic_key_file = \"rsa.pub\"",
            "name at least one",
        ),
        (
            "algorithms = [\"PS256\"]\npublic_key_file = \"rsa.pub\"",
            "\"PS256\" is not one of",
        ),
        (
            "algorithms = [\"HS256\", \"RS256\"]\npublic_key_file = \"rsa.pub\"",
            "cannot be accepted beside",
        ),
        ("algorithms = [\"RS256\"]", "exactly one of"),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\njwks_file = \"jwks.json\"",
            "exactly one of",
        ),
        (
            "algorithms = [\"RS256\"]\nsecret_env = \"X\"",
            "for HS256 only",
        ),
        (
            "algorithms = [\"HS256\"]\npublic_key_file = \"rsa.pub\"",
            "from secret_env",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_env = \"LITHAIR_TEST_UNSET_VARIABLE\"",
            "is not set",
        ),
        (
            "algorithms = [\"HS256\"]\nsecret_env = \"LITHAIR_TEST_SHORT_SECRET\"",
            "at least 32",
        ),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"missing.pem\"",
            "missing.pem",
        ),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"ec.pub\"",
            "not a PEM public key for RS256",
        ),
        (
            "algorithms = [\"RS256\", \"ES256\"]\npublic_key_file = \"rsa.pub\"",
            "one algorithm",
        ),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\nissuer_url = \"x\"",
            "unknown field",
        ),
        (
            "algorithms = [\"RS256\"]\npublic_key_file = \"rsa.pub\"\nleeway_secs = 99999999999",
            "at most 86400",
        ),
    ] {
        let e = auth(table)
            .err()
            .unwrap_or_else(|| panic!("accepted: {table}"));
        assert!(e.contains(says), "{table}: {e}");
    }
}

/// Through the whole pipeline: a JWT's roles open what they open, and a bad one is a
/// problem body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_takes_a_jwt_as_it_takes_a_token() {
    use lithair_runtime::testing::InProcess;
    use lithair_runtime::Service;
    let spec = r#"{
      "service": {"name": "t"},
      "roles": [{"name": "editor", "inherits": []}],
      "models": [{
        "name": "Note", "snake": "note", "path": "/api/notes",
        "operations": ["list", "get", "create", "update", "patch", "delete"],
        "permissions": {"read": ["editor"], "create": ["editor"], "update": [], "delete": []},
        "fields": [{"name": "text", "type": {"kind": "string"}}]
      }]
    }"#;
    let service = Service::from_spec_json(spec).expect("service");
    let config = format!(
        "[auth.jwt]\nalgorithms = [\"RS256\"]\npublic_key_file = \"{}\"\n",
        keys().join("rsa.pub").display()
    );
    let dir = tempfile::tempdir().unwrap();
    let svc = InProcess::start(service, &config, dir.path())
        .await
        .expect("start");
    let good = sign(Algorithm::RS256, None, &claims(), &rsa());
    let bearer = format!("Bearer {good}");
    let a = svc
        .send(
            "POST",
            "/api/notes",
            &[("authorization", &bearer)],
            Some(&json!({"text": "hi"})),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.json);
    let mut expired = claims();
    expired["exp"] = json!(now() - 3600);
    let bearer = format!("Bearer {}", sign(Algorithm::RS256, None, &expired, &rsa()));
    let a = svc
        .send("GET", "/api/notes", &[("authorization", &bearer)], None)
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("content-type"), Some("application/problem+json"));
    assert!(
        a.json["detail"].as_str().unwrap_or("").contains("expired"),
        "{}",
        a.json
    );
    svc.shutdown().await;
}
