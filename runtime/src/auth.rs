//! Who is calling: bearer API tokens from `lithair.toml` and JWTs from an identity
//! provider (`[auth.jwt]`, see `auth/jwt.rs`), and the permission check.
//!
//! An API token is stored only as the hex sha256 of its text; a worker thread remembers
//! the tokens it has found by their text (in memory, until a reload), so that a token seen
//! again is not hashed again. A bearer value is taken as an API token when it has the
//! `lth_` prefix of the tokens `token new` mints (or when no JWT is configured), and as a
//! JWT otherwise. Roles inherit per the schema. Deny by
//! default: an operation with no roles is refused to everyone; `public` lets anonymous
//! callers in.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

mod access;
mod jwt;
pub use access::{grant, Access, Grant};
pub use jwt::{JwtConfig, JwtConfigError, JwtVerifier};

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
    /// When the token stops being taken (RFC 3339; never when absent).
    #[serde(default)]
    pub expires_at: Option<String>,
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

    /// The process's one anonymous caller, shared by the checks of requests that carry
    /// none.
    pub fn shared_anonymous() -> &'static Principal {
        static ANONYMOUS: std::sync::LazyLock<Principal> =
            std::sync::LazyLock::new(Principal::anonymous);
        &ANONYMOUS
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

/// Token lookup and JWT keys, built at start and again on `SIGHUP`.
#[derive(Debug)]
pub struct Authenticator {
    /// The API tokens: the caller, and when the token expires (Unix seconds).
    by_hash: HashMap<[u8; 32], Holder>,
    anonymous: Arc<Principal>,
    jwt: Option<JwtVerifier>,
    /// Each schema role with the roles it inherits (for the roles of a JWT).
    effective_roles: HashMap<String, BTreeSet<String>>,
    /// Which authenticator this is, for the tokens a thread remembers ([`KNOWN`]).
    generation: u64,
    /// JWTs verified already: the sha256 of the token -> its caller and the last second
    /// it is taken. A token cannot change, and neither can the keys of this
    /// authenticator (a reload builds a new one), so only the time is checked again.
    verified: std::sync::Mutex<HashMap<[u8; 32], Verified>>,
}

/// A verified JWT's caller, and the last second the token is taken.
type Verified = (Arc<Principal>, u64);

/// An API token's caller, and when the token expires (Unix seconds).
type Holder = (Arc<Principal>, Option<i64>);

/// The last authenticator's number.
static GENERATION: AtomicU64 = AtomicU64::new(0);

/// The API tokens a thread has seen taken.
#[derive(Default)]
struct Known {
    /// The authenticator they were found through (0: none yet).
    generation: u64,
    /// By their text.
    tokens: HashMap<Box<[u8]>, Holder, foldhash::fast::RandomState>,
}

thread_local! {
    /// The API tokens this thread has seen taken, by their text, so that a token seen
    /// again is found without hashing it with sha256 (most of a token check's time).
    /// Only tokens the configuration lists are kept, so there are at most as many. A
    /// reload makes a new authenticator; the thread's first check through it forgets
    /// what the old one found.
    static KNOWN: RefCell<Known> = RefCell::new(Known::default());
}

/// Most verified JWTs remembered; at this many the map is emptied (the tokens in use are
/// verified again, once each).
const VERIFIED_JWTS: usize = 10_000;

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
    /// An `expires_at` that is not a timestamp.
    #[error(
        "token \"{0}\": expires_at must be an RFC 3339 timestamp such as 2027-01-31T00:00:00Z"
    )]
    BadExpiry(String),
    /// `[auth.jwt]` is unusable.
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
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
            let expires = t
                .expires_at
                .as_deref()
                .map(|at| {
                    chrono::DateTime::parse_from_rfc3339(at)
                        .map(|t| t.timestamp())
                        .map_err(|_| AuthConfigError::BadExpiry(t.name.clone()))
                })
                .transpose()?;
            if by_hash.insert(hash, (Arc::new(p), expires)).is_some() {
                return Err(AuthConfigError::Duplicate(t.name.clone()));
            }
        }
        Ok(Authenticator {
            by_hash,
            anonymous: Arc::new(Principal::anonymous()),
            jwt: None,
            effective_roles: spec.effective_roles.clone(),
            generation: GENERATION.fetch_add(1, Ordering::Relaxed) + 1,
            verified: Default::default(),
        })
    }

    /// Builds the lookup of `[auth]`: its tokens, and the keys of `[auth.jwt]` (key files
    /// named relative to `base`, the configuration file's directory).
    pub fn from_config(
        auth: &crate::config::AuthConfig,
        spec: &CompiledSpec,
        base: &Path,
    ) -> Result<Self, AuthConfigError> {
        let mut this = Self::new(&auth.tokens, spec)?;
        this.jwt = auth
            .jwt
            .as_ref()
            .map(|c| JwtVerifier::new(c, base))
            .transpose()?;
        Ok(this)
    }

    /// The caller a verified JWT names: its subject, with the token's roles that the
    /// schema declares (others are ignored).
    fn jwt_principal(&self, jwt: &JwtVerifier, token: &str) -> Result<Arc<Principal>, ApiError> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let lock = || self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((who, expires)) = lock().get(&hash) {
            if now <= *expires {
                return Ok(who.clone());
            }
        }
        let claims = jwt.verify(token)?;
        let expires = claims.expires;
        let mut effective = BTreeSet::from(["public".to_string()]);
        let mut roles = Vec::new();
        for role in claims.roles {
            match self.effective_roles.get(&role) {
                Some(all) => {
                    effective.extend(all.iter().cloned());
                    roles.push(role);
                }
                None => {
                    tracing::debug!(%role, subject = %claims.subject, "a JWT role the schema does not declare is ignored")
                }
            }
        }
        let who = Arc::new(Principal {
            name: claims.subject,
            roles,
            effective,
        });
        let mut verified = lock();
        if verified.len() >= VERIFIED_JWTS {
            verified.clear();
        }
        verified.insert(hash, (who.clone(), expires));
        Ok(who)
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
        let token = token.trim();
        if let Some(jwt) = self.jwt.as_ref().filter(|_| !token.starts_with("lth_")) {
            return self.jwt_principal(jwt, token);
        }
        let Some((who, expires)) = self.api_token(token.as_bytes()) else {
            return Err(ApiError::unauthorized("unknown token"));
        };
        if let Some(at) = expires.filter(|at| chrono::Utc::now().timestamp() >= *at) {
            let when = chrono::DateTime::from_timestamp(at, 0)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                .unwrap_or_default();
            return Err(ApiError::unauthorized(format!(
                "token \"{}\" expired at {when}",
                who.name
            )));
        }
        Ok(who)
    }

    /// The caller and expiry of the API token `token`: remembered by this thread, or
    /// found by its sha256 (and then remembered).
    fn api_token(&self, token: &[u8]) -> Option<Holder> {
        // (A thread that is ending has no table any more: its checks hash every token.)
        let found = KNOWN
            .try_with(|known| {
                let mut known = known.borrow_mut();
                if known.generation != self.generation {
                    known.generation = self.generation;
                    known.tokens.clear();
                }
                known.tokens.get(token).cloned()
            })
            .ok()
            .flatten();
        if found.is_some() {
            return found;
        }
        let hash: [u8; 32] = Sha256::digest(token).into();
        let holder = self.by_hash.get(&hash)?.clone();
        let _ = KNOWN.try_with(|known| {
            let mut known = known.borrow_mut();
            if known.generation == self.generation {
                known.tokens.insert(token.into(), holder.clone());
            }
        });
        Some(holder)
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
pub fn token_table(name: &str, hash: &str, roles: &[String], expires_at: Option<&str>) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap_or_default();
    let roles: Vec<String> = roles.iter().map(|r| text(r)).collect();
    let expires = expires_at
        .map(|at| format!("expires_at = {}\n", text(at)))
        .unwrap_or_default();
    format!(
        "[[auth.tokens]]\nname = {}\nsha256 = \"{hash}\"\nroles = [{}]\n{expires}",
        text(name),
        roles.join(", ")
    )
}

/// The moment a token minted now with `--expires span` expires: `span` is a whole number
/// of seconds, minutes, hours, days or weeks (`90s`, `30m`, `12h`, `30d`, `2w`).
pub fn expiry(span: &str) -> Result<String, String> {
    let bad =
        || format!("--expires {span:?}: use a whole number and a unit: 90s, 30m, 12h, 30d or 2w");
    let split = span.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = span.split_at(split);
    let n: i64 = n.parse().map_err(|_| bad())?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    let span = n
        .checked_mul(seconds)
        .and_then(chrono::TimeDelta::try_seconds)
        .filter(|d| d.num_seconds() > 0)
        .ok_or_else(bad)?;
    let at = chrono::Utc::now()
        .checked_add_signed(span)
        .ok_or_else(bad)?;
    Ok(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
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

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"{"service": {"name": "t"}, "roles": [{"name": "editor", "inherits": []}], "models": []}"#;

    fn token(expires_at: Option<&str>) -> (String, TokenConfig) {
        let (text, sha256) = mint();
        let config = TokenConfig {
            name: "ci".into(),
            sha256,
            roles: vec!["editor".into()],
            expires_at: expires_at.map(String::from),
        };
        (text, config)
    }

    #[test]
    fn a_token_dropped_by_a_reload_is_refused_on_the_thread_that_took_it() {
        let spec = CompiledSpec::from_json(SPEC).expect("spec");
        let (kept, kept_config) = token(None);
        let (dropped, dropped_config) = token(None);
        let before =
            Authenticator::new(&[kept_config.clone(), dropped_config], &spec).expect("tokens");
        let call = |auth: &Authenticator, t: &str| {
            auth.authenticate(Some(format!("Bearer {t}").as_bytes()))
        };
        // Taken twice: found by its hash, then remembered by this thread.
        for _ in 0..2 {
            assert_eq!(call(&before, &dropped).expect("listed").name, "ci");
        }
        let after = Authenticator::new(&[kept_config], &spec).expect("tokens");
        let e = call(&after, &dropped).expect_err("no longer listed");
        assert_eq!((e.status, e.detail.as_str()), (401, "unknown token"));
        assert!(call(&after, &kept).is_ok());
        // A token that differs from a remembered one in its last character is not it.
        let mut near = kept.clone();
        let last = if near.ends_with('0') { "1" } else { "0" };
        near.pop();
        near.push_str(last);
        assert_eq!(call(&after, &near).expect_err("another token").status, 401);
    }

    #[test]
    fn an_expired_token_is_refused_and_says_when_it_expired() {
        let spec = CompiledSpec::from_json(SPEC).expect("spec");
        let (past, past_config) = token(Some("2020-01-01T00:00:00Z"));
        let (future, future_config) = token(Some(&expiry("1d").expect("expiry")));
        let (never, never_config) = token(None);
        let auth =
            Authenticator::new(&[past_config, future_config, never_config], &spec).expect("tokens");
        let call = |t: &str| auth.authenticate(Some(format!("Bearer {t}").as_bytes()));
        let e = call(&past).expect_err("expired");
        assert_eq!(e.status, 401);
        assert_eq!(e.detail, "token \"ci\" expired at 2020-01-01T00:00:00Z");
        assert!(call(&future).is_ok());
        assert!(call(&never).is_ok());
        let (_, bad) = token(Some("next week"));
        let e = Authenticator::new(&[bad], &spec).expect_err("a bad expiry");
        assert!(
            e.to_string()
                .contains("expires_at must be an RFC 3339 timestamp"),
            "{e}"
        );
    }

    #[test]
    fn expiry_spans_take_a_number_and_a_unit() {
        let now = chrono::Utc::now();
        let at = |span: &str| {
            let text = expiry(span).expect(span);
            let t = chrono::DateTime::parse_from_rfc3339(&text).expect("timestamp");
            (t.with_timezone(&chrono::Utc) - now).num_seconds()
        };
        assert!((89..=91).contains(&at("90s")));
        assert!((1799..=1801).contains(&at("30m")));
        assert!((30 * 86_400 - 1..=30 * 86_400 + 1).contains(&at("30d")));
        assert!((14 * 86_400 - 1..=14 * 86_400 + 1).contains(&at("2w")));
        for bad in ["", "30", "d", "30x", "-1d", "0h", "1.5d", "99999999999999w"] {
            assert!(expiry(bad).is_err(), "{bad}");
        }
        let table = token_table("ci", "00", &["editor".into()], Some("2027-01-01T00:00:00Z"));
        assert!(
            table.ends_with("expires_at = \"2027-01-01T00:00:00Z\"\n"),
            "{table}"
        );
    }
}
