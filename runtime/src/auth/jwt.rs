//! JSON Web Tokens from an identity provider (`[auth.jwt]`), verified with
//! `jsonwebtoken`.
//!
//! The keys are read once, when the configuration loads (at start and on `SIGHUP`): one
//! public key (`public_key_file`, PEM), a JWK set (`jwks_file`, the key chosen by the
//! token's `kid`), or for HS256 a secret from an environment variable (`secret_env`;
//! never from the file). One configuration takes either HS256 or the asymmetric
//! algorithms, never both, so that a public key can never be used as an HMAC secret.
//!
//! A token must name an accepted algorithm (`alg: none` is refused before anything
//! else) and carry `exp`; `nbf` is checked when the token has it, `iss` and `aud` when
//! they are configured. `exp` and `nbf` are taken within `leeway_secs`. Every refusal is a 401 whose detail says what failed, never
//! which key would have worked.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::error::ApiError;

/// `[auth.jwt]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The `iss` a token must carry (unchecked when absent).
    pub issuer: Option<String>,
    /// The `aud` a token must carry (unchecked when absent).
    pub audience: Option<String>,
    /// The accepted algorithms: HS256, or any of RS256, ES256 and EdDSA.
    pub algorithms: Vec<String>,
    /// A PEM public key (relative paths from the configuration file's directory).
    pub public_key_file: Option<PathBuf>,
    /// A JWK set: its keys are chosen by the token's `kid`.
    pub jwks_file: Option<PathBuf>,
    /// HS256 only: the environment variable holding the shared secret.
    pub secret_env: Option<String>,
    /// The claim holding the caller's roles, a list of names; a dotted path reaches a
    /// nested claim (`realm_access.roles`).
    #[serde(default = "roles_claim")]
    pub roles_claim: String,
    /// The claim naming the caller (their subject).
    #[serde(default = "subject_claim")]
    pub subject_claim: String,
    /// Seconds of clock difference allowed for `exp` and `nbf`.
    #[serde(default = "leeway_secs")]
    pub leeway_secs: u64,
}

fn roles_claim() -> String {
    "roles".into()
}

fn subject_claim() -> String {
    "sub".into()
}

fn leeway_secs() -> u64 {
    30
}

/// Why `[auth.jwt]` is unusable.
#[derive(Debug, thiserror::Error)]
pub enum JwtConfigError {
    /// No algorithm, or one this service does not know.
    #[error("[auth.jwt] algorithms: {0}")]
    Algorithms(String),
    /// Not exactly one source of keys, or one that does not fit the algorithms.
    #[error("[auth.jwt]: {0}")]
    Keys(String),
    /// A key file cannot be read or parsed.
    #[error("[auth.jwt] {path}: {why}")]
    KeyFile {
        /// The file.
        path: String,
        /// What is wrong.
        why: String,
    },
}

/// The largest `leeway_secs` taken.
const MAX_LEEWAY_SECS: u64 = 86_400;

/// Verifies tokens with the keys of one `[auth.jwt]`.
pub struct JwtVerifier {
    keys: Keys,
    /// One validation per accepted algorithm.
    validations: HashMap<Algorithm, Validation>,
    accepted: String,
    roles_claim: Vec<String>,
    subject_claim: Vec<String>,
    subject_name: String,
    leeway: u64,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("accepted", &self.accepted)
            .finish_non_exhaustive()
    }
}

enum Keys {
    /// One key for every token.
    One(DecodingKey),
    /// A JWK set: key id -> the key and the algorithm it is for (if the set says).
    ByKid(HashMap<String, (DecodingKey, Option<Algorithm>)>),
}

/// What a verified token says.
pub struct Claims {
    /// The subject claim's value.
    pub subject: String,
    /// The role names of the roles claim (none when it is absent).
    pub roles: Vec<String>,
    /// Its `exp` plus the leeway: the last second it is taken.
    pub expires: u64,
}

impl JwtVerifier {
    /// Reads the keys of `config`; relative paths are taken from `base`.
    pub fn new(config: &JwtConfig, base: &Path) -> Result<Self, JwtConfigError> {
        if config.leeway_secs > MAX_LEEWAY_SECS {
            return Err(JwtConfigError::Keys(format!(
                "leeway_secs is {}; at most {MAX_LEEWAY_SECS} (a day) is taken",
                config.leeway_secs
            )));
        }
        if config.algorithms.is_empty() {
            return Err(JwtConfigError::Algorithms(
                "name at least one of HS256, RS256, ES256, EdDSA".into(),
            ));
        }
        let mut algorithms = Vec::new();
        for name in &config.algorithms {
            let alg = match name.as_str() {
                "HS256" => Algorithm::HS256,
                "RS256" => Algorithm::RS256,
                "ES256" => Algorithm::ES256,
                "EdDSA" => Algorithm::EdDSA,
                other => {
                    return Err(JwtConfigError::Algorithms(format!(
                        "\"{other}\" is not one of HS256, RS256, ES256, EdDSA"
                    )))
                }
            };
            algorithms.push(alg);
        }
        let hmac = algorithms.contains(&Algorithm::HS256);
        if hmac && algorithms.len() > 1 {
            return Err(JwtConfigError::Algorithms(
                "HS256 cannot be accepted beside public-key algorithms (a public key must never \
                 serve as an HMAC secret): configure one or the other"
                    .into(),
            ));
        }
        let one_source = || {
            JwtConfigError::Keys(
                "set exactly one of public_key_file, jwks_file and secret_env".into(),
            )
        };
        let keys = match (
            &config.secret_env,
            &config.public_key_file,
            &config.jwks_file,
        ) {
            (Some(var), None, None) => {
                if !hmac {
                    return Err(JwtConfigError::Keys(
                        "secret_env is for HS256 only; public-key algorithms take \
                         public_key_file or jwks_file"
                            .into(),
                    ));
                }
                let secret = std::env::var(var).map_err(|_| {
                    JwtConfigError::Keys(format!("secret_env: the variable {var} is not set"))
                })?;
                if secret.len() < 32 {
                    return Err(JwtConfigError::Keys(format!(
                        "secret_env: the secret in {var} has {} bytes; HS256 needs at least 32",
                        secret.len()
                    )));
                }
                Keys::One(DecodingKey::from_secret(secret.as_bytes()))
            }
            (None, Some(_), None) | (None, None, Some(_)) if hmac => {
                return Err(JwtConfigError::Keys(
                    "HS256 takes its secret from secret_env".into(),
                ))
            }
            (None, Some(file), None) => Keys::One(pem_key(&base.join(file), &algorithms)?),
            (None, None, Some(file)) => Keys::ByKid(jwks(&base.join(file), &algorithms)?),
            _ => return Err(one_source()),
        };
        let validations = algorithms
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.leeway = config.leeway_secs;
                v.validate_nbf = true;
                let mut required = vec!["exp"];
                if let Some(iss) = &config.issuer {
                    v.set_issuer(&[iss]);
                    required.push("iss");
                }
                match &config.audience {
                    Some(aud) => {
                        v.set_audience(&[aud]);
                        required.push("aud");
                    }
                    None => v.validate_aud = false,
                }
                v.set_required_spec_claims(&required);
                (*alg, v)
            })
            .collect();
        Ok(JwtVerifier {
            keys,
            validations,
            accepted: config.algorithms.join(", "),
            roles_claim: config.roles_claim.split('.').map(String::from).collect(),
            subject_claim: config.subject_claim.split('.').map(String::from).collect(),
            subject_name: config.subject_claim.clone(),
            leeway: config.leeway_secs,
        })
    }

    /// Verifies `token`: its subject and roles, or a 401 that says what failed.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let refuse = |why: String| ApiError::unauthorized(format!("JWT refused: {why}"));
        let alg = header_alg(token).map_err(refuse)?;
        let Some(validation) = self.validations.get(&alg) else {
            return Err(refuse(format!(
                "algorithm {alg:?} is not accepted here (accepted: {})",
                self.accepted
            )));
        };
        let key = match &self.keys {
            Keys::One(key) => key,
            Keys::ByKid(keys) => {
                let header = jsonwebtoken::decode_header(token)
                    .map_err(|e| refuse(format!("malformed header: {e}")))?;
                let found = match header.kid.as_deref() {
                    Some(kid) => keys.get(kid),
                    // A set of one key needs no id.
                    None if keys.len() == 1 => keys.values().next(),
                    None => return Err(refuse("the token names no key id (kid)".into())),
                };
                let Some((key, for_alg)) = found else {
                    return Err(refuse("unknown key id (kid)".into()));
                };
                if for_alg.is_some_and(|a| a != alg) {
                    return Err(refuse(format!(
                        "its key id (kid) names a key that is not for {alg:?}"
                    )));
                }
                key
            }
        };
        let data = jsonwebtoken::decode::<Value>(token, key, validation).map_err(|e| {
            refuse(match e.kind() {
                ErrorKind::ExpiredSignature => "it has expired (exp)".into(),
                ErrorKind::ImmatureSignature => "it is not valid yet (nbf)".into(),
                ErrorKind::InvalidIssuer => "wrong issuer (iss)".into(),
                ErrorKind::InvalidAudience => "wrong audience (aud)".into(),
                ErrorKind::InvalidSignature => "bad signature".into(),
                ErrorKind::InvalidAlgorithm => {
                    format!("algorithm {alg:?} does not fit the key")
                }
                ErrorKind::MissingRequiredClaim(c) => format!("it has no `{c}` claim"),
                _ => format!("malformed token: {e}"),
            })
        })?;
        let claims = data.claims;
        let subject = match path(&claims, &self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => {
                return Err(refuse(format!(
                    "it has no `{}` claim naming the caller",
                    self.subject_name
                )))
            }
        };
        let roles = match path(&claims, &self.roles_claim) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            Some(Value::String(one)) => vec![one.clone()],
            _ => Vec::new(),
        };
        // `exp` is a required claim: the validation above checked that it is there.
        let exp = claims.get("exp").and_then(Value::as_u64).unwrap_or(0);
        Ok(Claims {
            subject,
            roles,
            expires: exp.saturating_add(self.leeway),
        })
    }
}

/// The algorithm a token's header names; `none` and unknown names are refused here.
fn header_alg(token: &str) -> Result<Algorithm, String> {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or_default();
    if token.split('.').count() != 3 {
        return Err("malformed token: a JWT has three parts".into());
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| "malformed header: not base64url".to_string())?;
    let header: Value =
        serde_json::from_slice(&bytes).map_err(|_| "malformed header: not JSON".to_string())?;
    let Some(alg) = header.get("alg").and_then(Value::as_str) else {
        return Err("malformed header: no `alg`".into());
    };
    if alg.eq_ignore_ascii_case("none") {
        return Err("unsigned tokens (alg none) are refused".into());
    }
    Algorithm::from_str(alg).map_err(|_| format!("algorithm {alg} is not supported"))
}

/// The value at a dotted path of claims.
fn path<'a>(claims: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(claims, |v, part| v.get(part))
}

fn read(path: &Path) -> Result<Vec<u8>, JwtConfigError> {
    std::fs::read(path).map_err(|e| JwtConfigError::KeyFile {
        path: path.display().to_string(),
        why: e.to_string(),
    })
}

/// A PEM public key for `algorithms` (all of one family: one file holds one key).
fn pem_key(path: &Path, algorithms: &[Algorithm]) -> Result<DecodingKey, JwtConfigError> {
    let bytes = read(path)?;
    let bad = |why: String| JwtConfigError::KeyFile {
        path: path.display().to_string(),
        why,
    };
    let [alg] = algorithms else {
        return Err(JwtConfigError::Keys(
            "public_key_file holds one key, for one algorithm: name one, or use jwks_file".into(),
        ));
    };
    let parsed = match alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(&bytes),
        Algorithm::ES256 => DecodingKey::from_ec_pem(&bytes),
        _ => DecodingKey::from_ed_pem(&bytes),
    };
    parsed.map_err(|e| bad(format!("not a PEM public key for {alg:?}: {e}")))
}

/// The keys of a JWK set, by key id.
fn jwks(
    path: &Path,
    algorithms: &[Algorithm],
) -> Result<HashMap<String, (DecodingKey, Option<Algorithm>)>, JwtConfigError> {
    let bytes = read(path)?;
    let bad = |why: String| JwtConfigError::KeyFile {
        path: path.display().to_string(),
        why,
    };
    let set: jsonwebtoken::jwk::JwkSet =
        serde_json::from_slice(&bytes).map_err(|e| bad(format!("not a JWK set: {e}")))?;
    let mut keys = HashMap::new();
    for (i, jwk) in set.keys.iter().enumerate() {
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        if kid.is_empty() && set.keys.len() > 1 {
            return Err(bad(format!(
                "key {i} has no kid (a set of several keys needs them)"
            )));
        }
        // Encryption keys never verify a signature.
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            continue;
        }
        let alg = match jwk.common.key_algorithm {
            None => None,
            Some(a) => match Algorithm::from_str(&a.to_string()) {
                Ok(alg) => Some(alg),
                // An encryption algorithm (RSA-OAEP, ...): not a signing key.
                Err(_) => continue,
            },
        };
        if alg.is_some_and(|a| !algorithms.contains(&a)) {
            // A key for an algorithm this service does not accept is never used.
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| bad(format!("key {kid:?}: {e}")))?;
        if keys.insert(kid.clone(), (key, alg)).is_some() {
            return Err(bad(format!("the kid {kid:?} is there twice")));
        }
    }
    if keys.is_empty() {
        return Err(bad("no key for the accepted algorithms".into()));
    }
    Ok(keys)
}
