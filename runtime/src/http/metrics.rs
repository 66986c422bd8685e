//! `GET /metrics`: the service's metrics in the Prometheus text format, kept and encoded
//! by `prometheus-client`.
//!
//! - Requests: `lithair_http_requests_total{model,operation,status}` and
//!   `lithair_http_request_duration_seconds{model,operation}` (a histogram), recorded by
//!   the measure stage after the router for every answer (`model` is empty for the
//!   operational routes; `operation` is the CRUD operation, the action's name, or the
//!   route). Each route's labels and series are made once ([`RouteMetrics`]).
//! - Stages: `lithair_stage_duration_seconds{stage}` (a histogram per stage of
//!   `domain::Stage`: the pipeline's own checks, the schema check, the hooks, a write's
//!   wait for Raft, the apply of an entry, the rendering of a record).
//! - Raft: `lithair_raft_term`, `lithair_raft_is_leader`, `lithair_raft_last_applied`,
//!   and on the leader `lithair_raft_replication_lag{peer}` (entries not matched yet).
//! - The firewall: `lithair_firewall_denied_total`, `lithair_rate_limited_total`.
//! - The store's series, with the names they always had (`lithair_store_events_total`,
//!   `lithair_store_records`, ...), the histograms `lithair_store_fsync_duration_seconds`
//!   (each `fdatasync` of the two logs) and `lithair_store_batch_size` (commands per
//!   applied Raft entry), and the open connections and tracked addresses.
//! - The process: `process_resident_memory_bytes`, `process_open_fds`.
//!
//! The values that live elsewhere (the store's counters, Raft, the process) are read when
//! the metrics are asked for. Histograms are `crate::histogram`'s, which take no lock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::histogram::{exponential_buckets, Histogram};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use std::sync::Arc;

use hyper::Request;

use super::app::App;
use super::facts::Facts;
use super::respond::{self, Resp};
use super::router::{ModelOp, Route};
use super::stage::{Next, Reply, Step};
use crate::domain::{Stage, Stages};
use crate::spec::Operation;

/// `lithair_stage_duration_seconds{stage}`: the store's histogram of each stage, one
/// family labelled by stage.
#[derive(Debug)]
struct StageTimes(Stages);

impl Collector for StageTimes {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "lithair_stage_duration_seconds",
            "Time of each stage of a request: firewall, route, authenticate, authorize, validate, hooks, raft (a write's wait for its commit), apply (one Raft entry), respond.",
            None,
            MetricType::Histogram,
        )?;
        for stage in Stage::ALL {
            let labels = [("stage", stage.name())];
            self.0.of(stage).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// A request's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    model: String,
    operation: String,
    status: u16,
}

/// A request duration's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DurationLabels {
    model: String,
    operation: String,
}

/// A peer's label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct PeerLabels {
    peer: u64,
}

/// The metrics the service keeps itself.
pub(crate) struct Metrics {
    requests: Family<RequestLabels, Counter>,
    /// Every route's labels and series, made at the start (see [`RouteMetrics`]).
    routes: Routes,
    /// On the leader: each peer's replication lag, in log entries.
    lag: Family<PeerLabels, Gauge>,
    durations: Family<DurationLabels, Histogram, fn() -> Histogram>,
    /// Set when the metrics are asked for.
    gauges: Vec<(&'static str, Gauge)>,
    counters: Vec<(&'static str, Counter)>,
    registry: Registry,
    /// One scrape at a time (the counters kept elsewhere are brought up to date in it).
    scrape: std::sync::Mutex<()>,
}

/// The series read from elsewhere when the metrics are asked for: gauges, then counters
/// (their names without `_total`, which the encoding adds).
const GAUGES: &[(&str, &str)] = &[
    (
        "lithair_store_replayed_events",
        "Events replayed at the last start.",
    ),
    (
        "lithair_store_snapshot_records_loaded",
        "Records loaded from the snapshot at the last start.",
    ),
    ("lithair_store_records", "Records held."),
    (
        "lithair_store_last_sequence",
        "The last event's sequence number.",
    ),
    (
        "lithair_http_open_connections",
        "Open connections on the public port.",
    ),
    (
        "lithair_firewall_tracked_addresses",
        "Addresses the rate limit tracks.",
    ),
    ("lithair_raft_term", "The current Raft term."),
    (
        "lithair_raft_is_leader",
        "1 while this node leads its Raft group.",
    ),
    (
        "lithair_raft_last_applied",
        "The last Raft log index this node applied.",
    ),
    (
        "process_resident_memory_bytes",
        "Resident memory of the process.",
    ),
    ("process_open_fds", "Open file descriptors of the process."),
];
const COUNTERS: &[(&str, &str)] = &[
    ("lithair_store_events", "Events committed."),
    ("lithair_store_batches", "Batches committed."),
    ("lithair_store_snapshots", "Snapshots written."),
    (
        "lithair_firewall_denied",
        "Requests refused by the allow and deny rules.",
    ),
    (
        "lithair_rate_limited",
        "Requests refused by the rate limit (429).",
    ),
];

/// The labels and series of one route: a model's operation, a projection or an
/// operational route. Made once, so that recording an answer allocates nothing and looks
/// nothing up by its labels.
pub(crate) struct RouteMetrics {
    /// The `model` label (empty for the operational routes).
    pub(crate) model: Arc<str>,
    /// The `operation` label.
    pub(crate) operation: Arc<str>,
    /// Its duration histogram, made at its first answer.
    duration: std::sync::OnceLock<Histogram>,
    /// The request counters of the statuses seen so far, each made at its first answer;
    /// a route answering more distinct statuses than there are slots counts the rest
    /// through the family.
    statuses: [std::sync::OnceLock<(u16, Counter)>; 8],
}

/// The routes' metrics, by where a request's route points.
struct Routes {
    /// Per model: the CRUD operations (in `Operation::ALL`'s order), history, version,
    /// change feed, then each action.
    models: Vec<Vec<RouteMetrics>>,
    projections: Vec<RouteMetrics>,
    /// The operational routes, in [`FIXED`]'s order.
    fixed: Vec<RouteMetrics>,
}

/// The `operation` labels of the routes of no model.
const FIXED: [&str; 9] = [
    "audit",
    "health",
    "ready",
    "metrics",
    "openapi",
    "cluster_status",
    "raft",
    "members",
    "unrouted",
];

/// Where a request's route's metrics are in [`Routes`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum RouteKey {
    Model(usize, usize),
    Projection(usize),
    Fixed(usize),
}

impl RouteKey {
    /// The key of `route` (None: no route was found).
    pub(crate) fn of(route: Option<&Route>) -> RouteKey {
        let fixed = |name: &str| {
            RouteKey::Fixed(
                FIXED
                    .iter()
                    .position(|f| *f == name)
                    .unwrap_or(FIXED.len() - 1),
            )
        };
        match route {
            Some(Route::Model(r)) => RouteKey::Model(
                r.model,
                match r.op {
                    ModelOp::Crud(op) => Operation::ALL.iter().position(|o| *o == op).unwrap_or(0),
                    ModelOp::History => Operation::ALL.len(),
                    ModelOp::Version(_) => Operation::ALL.len() + 1,
                    ModelOp::Events => Operation::ALL.len() + 2,
                    ModelOp::Action(a) => Operation::ALL.len() + 3 + a,
                },
            ),
            Some(Route::Projection(i)) => RouteKey::Projection(*i),
            Some(Route::Audit) => fixed("audit"),
            Some(Route::Health) => fixed("health"),
            Some(Route::Ready) => fixed("ready"),
            Some(Route::Metrics) => fixed("metrics"),
            Some(Route::OpenApi) => fixed("openapi"),
            Some(Route::ClusterStatus) => fixed("cluster_status"),
            Some(Route::Raft(_)) => fixed("raft"),
            Some(Route::Members) => fixed("members"),
            None => fixed("unrouted"),
        }
    }
}

impl RouteMetrics {
    fn new(model: &str, operation: &str) -> RouteMetrics {
        RouteMetrics {
            model: model.into(),
            operation: operation.into(),
            duration: Default::default(),
            statuses: Default::default(),
        }
    }
}

impl Routes {
    fn new(spec: &lithair_spec::Schema) -> Routes {
        let models = spec
            .models
            .iter()
            .map(|m| {
                let ops = Operation::ALL
                    .iter()
                    .map(|op| op.as_str())
                    .chain(["history", "version", "events"])
                    .chain(m.actions.iter().map(|a| a.name.as_str()));
                ops.map(|op| RouteMetrics::new(&m.name, op)).collect()
            })
            .collect();
        let projections = spec
            .projections
            .iter()
            .map(|p| RouteMetrics::new(&p.name, "list"))
            .collect();
        let fixed = FIXED.iter().map(|op| RouteMetrics::new("", op)).collect();
        Routes {
            models,
            projections,
            fixed,
        }
    }

    fn get(&self, key: RouteKey) -> Option<&RouteMetrics> {
        match key {
            RouteKey::Model(m, op) => self.models.get(m)?.get(op),
            RouteKey::Projection(i) => self.projections.get(i),
            RouteKey::Fixed(i) => self.fixed.get(i),
        }
    }
}

fn buckets() -> Histogram {
    // 100 µs to ~3.3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

impl Metrics {
    /// The metrics of a service of `spec` whose store keeps `stats`.
    pub(crate) fn new(spec: &lithair_spec::Schema, stats: &crate::domain::Stats) -> Self {
        let mut registry = Registry::default();
        registry.register(
            "lithair_store_fsync_duration_seconds",
            "Time of each fdatasync of the Raft log and the event log.",
            stats.fsync.clone(),
        );
        registry.register(
            "lithair_store_batch_size",
            "Commands per applied Raft entry (concurrent writes batched together).",
            stats.batch_size.clone(),
        );
        registry.register_collector(Box::new(StageTimes(stats.stages.clone())));
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "lithair_http_requests",
            "Requests answered, by model, operation and status.",
            requests.clone(),
        );
        let durations = Family::new_with_constructor(buckets as fn() -> Histogram);
        registry.register(
            "lithair_http_request_duration_seconds",
            "Time to answer a request, by model and operation.",
            durations.clone(),
        );
        let lag = Family::<PeerLabels, Gauge>::default();
        registry.register(
            "lithair_raft_replication_lag",
            "On the leader: the log entries each peer has not matched yet.",
            lag.clone(),
        );
        let gauges = GAUGES
            .iter()
            .map(|(name, help)| {
                let g = Gauge::default();
                registry.register(*name, *help, g.clone());
                (*name, g)
            })
            .collect();
        let counters = COUNTERS
            .iter()
            .map(|(name, help)| {
                let c = Counter::default();
                registry.register(*name, *help, c.clone());
                (*name, c)
            })
            .collect();
        Metrics {
            routes: Routes::new(spec),
            requests,
            lag,
            durations,
            gauges,
            counters,
            registry,
            scrape: std::sync::Mutex::new(()),
        }
    }

    /// The labels and series of the route `key`.
    pub(crate) fn route(&self, key: RouteKey) -> Option<&RouteMetrics> {
        self.routes.get(key)
    }

    /// Records an answer of `route`.
    pub(crate) fn record(&self, route: &RouteMetrics, status: u16, took: Duration) {
        route
            .duration
            .get_or_init(|| {
                self.durations
                    .get_or_create(&DurationLabels {
                        model: route.model.to_string(),
                        operation: route.operation.to_string(),
                    })
                    .clone()
            })
            .observe(took.as_secs_f64());
        for slot in &route.statuses {
            let (seen, counter) = slot.get_or_init(|| {
                let labels = RequestLabels {
                    model: route.model.to_string(),
                    operation: route.operation.to_string(),
                    status,
                };
                (status, self.requests.get_or_create(&labels).clone())
            });
            if *seen == status {
                counter.inc();
                return;
            }
        }
        self.requests
            .get_or_create(&RequestLabels {
                model: route.model.to_string(),
                operation: route.operation.to_string(),
                status,
            })
            .inc();
    }

    fn gauge(&self, name: &str, v: u64) {
        if let Some((_, g)) = self.gauges.iter().find(|(n, _)| *n == name) {
            g.set(i64::try_from(v).unwrap_or(i64::MAX));
        }
    }

    /// Sets a counter kept elsewhere to its value now.
    fn counter(&self, name: &str, v: u64) {
        if let Some((_, c)) = self.counters.iter().find(|(n, _)| *n == name) {
            let now = c.get();
            if v > now {
                c.inc_by(v - now);
            }
        }
    }
}

/// The resident memory (bytes) and open file descriptors of this process.
fn process() -> (u64, u64) {
    // SAFETY: sysconf only reads a system constant.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count());
    (rss, fds as u64)
}

/// The stage after the router: counts and times every routed request, whatever stage
/// answers it (authentication, the body's checks, the endpoint).
#[derive(Clone)]
pub(crate) struct Measure {
    pub(crate) app: Arc<App>,
}

impl<B: Send + 'static> Step<B> for Measure {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let key = RouteKey::of(facts.route.as_ref());
        let started = crate::clock::Instant::now();
        let mut reply = next.answer(req, facts);
        match reply.answered() {
            Some(r) => {
                measured(&self.app, key, started, r);
                reply
            }
            None => {
                let app = self.app.clone();
                reply.edit(move |r| measured(&app, key, started, r))
            }
        }
    }
}

/// Counts and times the answer `r` of a request to the route `key`, started at `started`.
fn measured(app: &App, key: RouteKey, started: crate::clock::Instant, r: &mut Resp) {
    if let Some(route) = app.metrics.route(key) {
        app.metrics
            .record(route, r.status().as_u16(), started.elapsed());
        // The request log and the trace name the model and the operation.
        if app.opts.names_answer(r.status().as_u16()) {
            r.extensions_mut().insert(super::request_log::Logged {
                model: route.model.clone(),
                operation: route.operation.clone(),
            });
        }
    }
}

/// `GET /metrics`, in the OpenMetrics text format; labelled `text/plain` for a client whose
/// `Accept` names `text/plain` and not OpenMetrics (the text is the same).
pub(crate) fn serve(app: &App, headers: &hyper::HeaderMap) -> Resp {
    let m = &app.metrics;
    let _one = m.scrape.lock().unwrap_or_else(|p| p.into_inner());
    let s = &app.engine.store.stats;
    let (records, last_seq) = app.engine.store.read(|st| {
        (
            st.models.values().map(|m| m.records.len()).sum::<usize>(),
            st.last_seq,
        )
    });
    m.counter("lithair_store_events", s.events.load(Ordering::Relaxed));
    m.counter("lithair_store_batches", s.batches.load(Ordering::Relaxed));
    m.counter(
        "lithair_store_snapshots",
        s.snapshots.load(Ordering::Relaxed),
    );
    let (denied, limited) = app.live.firewall.refused();
    m.counter("lithair_firewall_denied", denied);
    m.counter("lithair_rate_limited", limited);
    m.gauge(
        "lithair_store_replayed_events",
        s.replayed_events.load(Ordering::Relaxed),
    );
    m.gauge(
        "lithair_store_snapshot_records_loaded",
        s.snapshot_records.load(Ordering::Relaxed),
    );
    m.gauge("lithair_store_records", records as u64);
    m.gauge("lithair_store_last_sequence", last_seq);
    m.gauge(
        "lithair_http_open_connections",
        app.open_connections.load(Ordering::Relaxed) as u64,
    );
    m.gauge(
        "lithair_firewall_tracked_addresses",
        app.live.firewall.rules().tracked() as u64,
    );
    let raft = app.engine.store.cluster().status();
    m.gauge("lithair_raft_term", raft.term);
    m.gauge(
        "lithair_raft_is_leader",
        u64::from(raft.leader == Some(raft.node_id)),
    );
    m.gauge("lithair_raft_last_applied", raft.last_applied.unwrap_or(0));
    // Only the leader knows its peers' lag; a node that no longer leads shows none.
    m.lag.clear();
    for (peer, lag) in app.engine.store.cluster().replication_lag() {
        m.lag
            .get_or_create(&PeerLabels { peer })
            .set(i64::try_from(lag).unwrap_or(i64::MAX));
    }
    let (rss, fds) = process();
    m.gauge("process_resident_memory_bytes", rss);
    m.gauge("process_open_fds", fds);
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &m.registry) {
        return respond::problem(&crate::error::ApiError::internal(e));
    }
    let accept = headers
        .get_all(hyper::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    let content_type =
        if accept.contains("text/plain") && !accept.contains("application/openmetrics-text") {
            "text/plain; charset=utf-8"
        } else {
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        };
    respond::text(200, content_type, text)
}
