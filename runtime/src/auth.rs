//! Who is calling: bearer API tokens from `lithair.toml`, and the permission check.
//!
//! A token is stored only as the hex sha256 of its text. Roles inherit per the schema.
//! Deny by default: an operation with no roles is refused to everyone; `public` lets
//! anonymous callers in.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::spec::CompiledSpec;

/// One `[[auth.tokens]]` table.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and the audit trail.
    pub name: String,
    /// Hex sha256 of the token.
    pub sha256: String,
    /// Roles the token carries.
    pub roles: Vec<String>,
}

/// The caller of a request.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Principal {
    /// Token name, or `anonymous`.
    pub name: String,
    /// Roles as configured (not expanded).
    pub roles: Vec<String>,
    /// Roles including inherited ones, plus `public`.
    #[serde(skip)]
    pub effective: BTreeSet<String>,
}

impl Principal {
    /// The anonymous caller.
    pub fn anonymous() -> Self {
        Principal {
            name: "anonymous".into(),
            roles: Vec::new(),
            effective: BTreeSet::from(["public".to_string()]),
        }
    }

    /// Whether the caller is anonymous.
    pub fn is_anonymous(&self) -> bool {
        self.roles.is_empty() && self.name == "anonymous"
    }

    /// Whether one of `allowed` is among the caller's roles.
    pub fn may(&self, allowed: &[String]) -> bool {
        allowed
            .iter()
            .any(|r| r == "public" || self.effective.contains(r))
    }
}

/// Token lookup, built once at start.
#[derive(Debug)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Arc<Principal>>,
    anonymous: Arc<Principal>,
}

/// Why the token configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    /// A hash is not 64 hex digits.
    #[error("token \"{0}\": sha256 must be 64 hex digits")]
    BadHash(String),
    /// A role is unknown to the schema.
    #[error("token \"{name}\": unknown role \"{role}\" (roles in lithair.yaml: {known})")]
    UnknownRole {
        name: String,
        role: String,
        known: String,
    },
    /// Two tokens share a hash.
    #[error("token \"{0}\": the same sha256 is configured twice")]
    Duplicate(String),
}

impl Authenticator {
    /// Builds the lookup, checking every token against the schema's roles.
    pub fn new(tokens: &[TokenConfig], spec: &CompiledSpec) -> Result<Self, AuthConfigError> {
        let mut by_hash = HashMap::new();
        for t in tokens {
            let mut hash = [0u8; 32];
            hex::decode_to_slice(t.sha256.as_bytes(), &mut hash)
                .map_err(|_| AuthConfigError::BadHash(t.name.clone()))?;
            let mut effective = BTreeSet::from(["public".to_string()]);
            for r in &t.roles {
                let Some(all) = spec.effective_roles.get(r) else {
                    return Err(AuthConfigError::UnknownRole {
                        name: t.name.clone(),
                        role: r.clone(),
                        known: spec
                            .spec
                            .roles
                            .iter()
                            .map(|r| r.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                    });
                };
                effective.extend(all.iter().cloned());
            }
            let p = Principal {
                name: t.name.clone(),
                roles: t.roles.clone(),
                effective,
            };
            if by_hash.insert(hash, Arc::new(p)).is_some() {
                return Err(AuthConfigError::Duplicate(t.name.clone()));
            }
        }
        Ok(Authenticator {
            by_hash,
            anonymous: Arc::new(Principal::anonymous()),
        })
    }

    /// The caller of a request, from its `Authorization` header (None: anonymous).
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Arc<Principal>, ApiError> {
        let Some(raw) = header else {
            return Ok(self.anonymous.clone());
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| ApiError::unauthorized("the Authorization header is not valid text"))?;
        let Some(token) = text
            .strip_prefix("Bearer ")
            .or_else(|| text.strip_prefix("bearer "))
        else {
            return Err(ApiError::unauthorized(
                "use `Authorization: Bearer <token>`",
            ));
        };
        let hash: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        self.by_hash
            .get(&hash)
            .cloned()
            .ok_or_else(|| ApiError::unauthorized("unknown token"))
    }
}

/// Checks that `who` may act; 401 for anonymous callers, 403 for tokens without the role.
pub fn authorize(who: &Principal, allowed: &[String], what: &str) -> Result<(), ApiError> {
    if who.may(allowed) {
        return Ok(());
    }
    if who.is_anonymous() {
        Err(ApiError::unauthorized(format!(
            "{what} needs a token with one of the roles: {}",
            roles_text(allowed)
        )))
    } else {
        Err(ApiError::forbidden(format!(
            "token \"{}\" may not {what}; it needs one of the roles: {}",
            who.name,
            roles_text(allowed)
        )))
    }
}

fn roles_text(allowed: &[String]) -> String {
    if allowed.is_empty() {
        "(none: nobody may)".into()
    } else {
        allowed.join(", ")
    }
}

/// The `[[auth.tokens]]` table of a token whose hash is `hash`, as `lithair.toml` holds it.
pub fn token_table(name: &str, hash: &str, roles: &[String]) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let roles: Vec<String> = roles.iter().map(|r| text(r)).collect();
    format!(
        "[[auth.tokens]]\nname = {}\nsha256 = \"{hash}\"\nroles = [{}]\n",
        text(name),
        roles.join(", ")
    )
}

/// A new random token (URL-safe, 256 bits) and its sha256.
pub fn mint() -> (String, String) {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = format!("lth_{}", hex::encode(bytes));
    let hash = hex::encode(Sha256::digest(token.as_bytes()));
    (token, hash)
}
