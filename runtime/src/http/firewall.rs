//! The firewall: the first stage of the pipeline after the connection limits. It finds
//! the client's address (the socket's peer, or what a trusted proxy says in
//! `X-Forwarded-For` / `Forwarded`), refuses denied addresses with 403, and applies the
//! per-address rate limit (GCRA, `governor`) with 429, `Retry-After` and the IETF draft's
//! `RateLimit-Policy` / `RateLimit` headers.
//!
//! Raft messages (`/_raft/*`), `/health` and the cluster's other members are never rate
//! limited. The rules can be replaced while the service runs (`SIGHUP`), without
//! dropping connections: every request reads the current ones.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;

use arc_swap::ArcSwap;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Request;
use ipnet::IpNet;

use super::facts::Facts;
use super::respond;
use super::stage::{Next, Reply, Step};
use crate::config::FirewallConfig;
use crate::error::ApiError;

/// The draft IETF rate-limit headers every answer of a limited address carries.
const RATELIMIT_POLICY: hyper::header::HeaderName =
    hyper::header::HeaderName::from_static("ratelimit-policy");
const RATELIMIT: hyper::header::HeaderName = hyper::header::HeaderName::from_static("ratelimit");

type Limiter =
    RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, DefaultClock, StateInformationMiddleware>;

/// The per-address rate limit.
struct RateLimit {
    limiter: Limiter,
    per_ip: u32,
    burst: u32,
    /// `RateLimit-Policy`. Kept as text: each answer gets a value of its own, so that
    /// answers on different cores share no reference count.
    policy: String,
}

/// The firewall's rules, as read from `[firewall]`.
pub struct Rules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted_proxies: Vec<IpNet>,
    limit: Option<RateLimit>,
    /// The cluster's peers: never rate limited.
    peers: Vec<IpAddr>,
}

fn contains(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical(ip);
    nets.iter().any(|n| n.contains(&ip))
}

/// An IPv4 address mapped into IPv6 (`::ffff:a.b.c.d`) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Rules {
    /// The rules of `config`; `peers` are the cluster's members' addresses.
    pub fn new(config: &FirewallConfig, peers: Vec<IpAddr>) -> Self {
        let limit = NonZeroU32::new(config.rate_limit.per_ip).map(|per_ip| {
            let burst = NonZeroU32::new(config.rate_limit.burst).unwrap_or(per_ip);
            let quota = Quota::per_second(per_ip).allow_burst(burst);
            // The window in which a whole burst comes back, in seconds (at least 1).
            let window = burst.get().div_ceil(per_ip.get()).max(1);
            let policy = format!("\"per-ip\";q={};w={window}", burst.get());
            RateLimit {
                limiter: RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
                per_ip: per_ip.get(),
                burst: burst.get(),
                policy,
            }
        });
        Rules {
            allow: config.allow.iter().map(|c| c.0).collect(),
            deny: config.deny.iter().map(|c| c.0).collect(),
            trusted_proxies: config.trusted_proxies.iter().map(|c| c.0).collect(),
            limit,
            peers: peers.into_iter().map(canonical).collect(),
        }
    }

    /// The client's address: the socket's `peer`, or, when the peer is a trusted proxy,
    /// the nearest address in the forwarding headers that is not one.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !contains(&self.trusted_proxies, peer) {
            return peer;
        }
        // The chain, client first: `Forwarded: for=…` if present, else `X-Forwarded-For`.
        let mut chain: Vec<IpAddr> = forwarded_for(headers);
        if chain.is_empty() {
            chain = x_forwarded_for(headers);
        }
        chain
            .into_iter()
            .rev()
            .map(canonical)
            .find(|ip| !contains(&self.trusted_proxies, *ip))
            .unwrap_or(peer)
    }

    /// Whether `ip` may talk to the service at all.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if contains(&self.deny, ip) {
            return false;
        }
        self.allow.is_empty() || contains(&self.allow, ip)
    }

    /// Removes the rate limit's state of addresses idle long enough to have their whole
    /// burst back: what keeps its memory bounded by the addresses active lately.
    pub fn forget_idle(&self) {
        if let Some(l) = &self.limit {
            l.limiter.retain_recent();
            l.limiter.shrink_to_fit();
        }
    }

    /// How many addresses the rate limit holds state for.
    pub fn tracked(&self) -> usize {
        self.limit.as_ref().map_or(0, |l| l.limiter.len())
    }
}

fn x_forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|part| parse_ip(part.trim()))
        .collect()
}

fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    headers
        .get_all("forwarded")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_ip(v.trim().trim_matches('"')))
                    .flatten()
            })
        })
        .collect()
}

/// An address as forwarding headers write it: `1.2.3.4`, `1.2.3.4:80`, `[::1]`, `[::1]:80`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    s.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// The rules in force, replaceable at run time (read without a lock: `arc-swap`).
#[derive(Clone)]
pub struct Firewall {
    rules: Arc<ArcSwap<Rules>>,
    /// Requests refused: (by the allow/deny rules, by the rate limit).
    refused: Arc<(std::sync::atomic::AtomicU64, std::sync::atomic::AtomicU64)>,
}

impl Firewall {
    /// A firewall with `rules`.
    pub fn new(rules: Rules) -> Self {
        Firewall {
            rules: Arc::new(ArcSwap::from_pointee(rules)),
            refused: Arc::default(),
        }
    }

    /// Requests refused so far: (by the allow/deny rules, by the rate limit).
    pub fn refused(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.refused.0.load(Relaxed), self.refused.1.load(Relaxed))
    }

    /// The rules in force.
    pub fn rules(&self) -> Arc<Rules> {
        self.rules.load_full()
    }

    /// Puts `rules` in force for the requests that come after.
    pub fn replace(&self, rules: Rules) {
        self.rules.store(Arc::new(rules));
    }

    /// Forgets idle addresses every `every`, as long as the firewall is used.
    pub fn spawn_cleanup(&self, every: Duration) {
        let weak = Arc::downgrade(&self.rules);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let Some(rules) = weak.upgrade() else { break };
                rules.load().forget_idle();
            }
        });
    }
}

/// What the firewall decided for one request.
enum Verdict {
    /// Go on; the `RateLimit-Policy` and `RateLimit` headers to add, if the request is
    /// limited.
    Pass(Option<(HeaderValue, HeaderValue)>),
    /// Refused.
    Refuse(ApiError),
}

fn decide<B>(rules: &Rules, req: &Request<B>, facts: &Facts) -> Verdict {
    let peer = facts
        .peer
        .map(|p| p.ip())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let ip = rules.client_ip(peer, req.headers());
    if !rules.admits(ip) {
        return Verdict::Refuse(ApiError::new(
            403,
            "Forbidden",
            format!("requests from {ip} are not allowed here"),
        ));
    }
    let path = req.uri().path();
    let exempt = path.starts_with("/_raft/") || path == "/health" || rules.peers.contains(&ip);
    let Some(limit) = rules.limit.as_ref().filter(|_| !exempt) else {
        return Verdict::Pass(None);
    };
    match limit.limiter.check_key(&ip) {
        Ok(state) => {
            let left = state.remaining_burst_capacity();
            // Seconds until the whole burst is back at the sustained rate.
            let reset = (limit.burst - left.min(limit.burst)).div_ceil(limit.per_ip);
            let state = HeaderValue::from_str(&format!("\"per-ip\";r={left};t={reset}"));
            Verdict::Pass(HeaderValue::from_str(&limit.policy).ok().zip(state.ok()))
        }
        Err(not_until) => {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let secs = secs.max(1);
            let mut e = ApiError::new(
                429,
                "Too Many Requests",
                format!(
                    "more than {} requests per second (bursts of {}) from {ip}; retry in {secs} s",
                    limit.per_ip, limit.burst
                ),
            );
            e.headers.push(("retry-after", secs.to_string()));
            e.headers.push(("ratelimit-policy", limit.policy.clone()));
            e.headers
                .push(("ratelimit", format!("\"per-ip\";r=0;t={secs}")));
            Verdict::Refuse(e)
        }
    }
}

impl<B: Send + 'static> Step<B> for Firewall {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let rules = self.rules.load();
        let verdict = decide(&rules, &req, facts);
        drop(rules);
        match verdict {
            Verdict::Refuse(e) => {
                let counter = if e.status == 429 {
                    &self.refused.1
                } else {
                    &self.refused.0
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let mut r = respond::problem(&e);
                if e.status == 403 {
                    r.headers_mut()
                        .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
                }
                Reply::now(r)
            }
            Verdict::Pass(None) => next.answer(req, facts),
            Verdict::Pass(Some((policy, state))) => next.answer(req, facts).edit(move |r| {
                r.headers_mut().insert(RATELIMIT_POLICY, policy);
                r.headers_mut().insert(RATELIMIT, state);
            }),
        }
    }
}
