//! The router, authentication and authorization stages of the pipeline.
//!
//! The router resolves a request once into a [`Route`]: for the API, the model, the
//! operation (or action) and the record id, with the roles it needs (404 and 405 here).
//! Authentication then finds the caller once (401 for a bad token), and authorization
//! checks the route's roles once (401 for anonymous callers, 403 for tokens without the
//! role; a right held only through the pseudo-role `owner` passes, and the endpoint
//! narrows it to the caller's records). The endpoints find the route and the caller in
//! the request's [`Facts`](super::facts::Facts).

use std::sync::Arc;

use hyper::{Method, Request};
use uuid::Uuid;

use super::app::{Live, Planes};
use super::facts::Facts;
use super::respond;
use super::stage::{Next, Reply, Step};
use crate::auth::{authorize, grant, Grant};
use crate::error::ApiError;
use crate::spec::{CompiledSpec, ModelSpec, Operation, ServiceSpec};

/// Where a request leads.
#[derive(Clone, Debug, PartialEq)]
pub enum Route {
    /// `GET /health`.
    Health,
    /// `GET /ready`.
    Ready,
    /// `GET /metrics`.
    Metrics,
    /// `GET /openapi.json`.
    OpenApi,
    /// `GET /_cluster/status`.
    ClusterStatus,
    /// `/_raft/<rpc>` (the cluster secret is checked there).
    Raft(String),
    /// `/_cluster/members[/<id>]` (its admin check is its own).
    Members,
    /// `GET /api/_audit` (the `audit.read` roles).
    Audit,
    /// `GET` of the projection at this index of the schema's projections (its `read`
    /// roles).
    Projection(usize),
    /// The API of a model.
    Model(ModelRoute),
}

/// A request to the API of a model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelRoute {
    /// The model's index in the schema.
    pub model: usize,
    /// What is asked.
    pub op: ModelOp,
    /// The record, for item operations and record actions.
    pub id: Option<Uuid>,
}

/// An operation of a model's API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOp {
    /// A CRUD operation.
    Crud(Operation),
    /// The action at this index of the model's actions.
    Action(usize),
    /// `GET {id}/history` of a model with a lifecycle.
    History,
    /// `GET {id}/versions/{v}` of a `versioned` model.
    Version(u64),
    /// `GET _events`: the model's change feed.
    Events,
}

impl ModelRoute {
    /// The model.
    pub fn model<'a>(&self, spec: &'a ServiceSpec) -> &'a ModelSpec {
        &spec.models[self.model]
    }

    /// The roles it needs.
    pub fn roles<'a>(&self, spec: &'a ServiceSpec) -> &'a [String] {
        let m = self.model(spec);
        match self.op {
            ModelOp::Crud(op) => m.permissions.for_op(op),
            ModelOp::Action(a) => &m.actions[a].permission,
            ModelOp::History | ModelOp::Version(_) | ModelOp::Events => &m.permissions.read,
        }
    }

    /// What it does, for messages ("create Product", "run Product.restock").
    pub fn what(&self, spec: &ServiceSpec) -> String {
        let m = self.model(spec);
        match self.op {
            ModelOp::Crud(op) => format!("{} {}", verb(op), m.name),
            ModelOp::Action(a) => format!("run {}.{}", m.name, m.actions[a].name),
            ModelOp::History | ModelOp::Version(_) => format!("read the history of {}", m.name),
            ModelOp::Events => format!("follow the changes of {}", m.name),
        }
    }
}

fn verb(op: Operation) -> &'static str {
    match op {
        Operation::List => "list",
        Operation::Get => "read",
        Operation::Create => "create",
        Operation::Update | Operation::Patch => "update",
        Operation::Delete => "delete",
    }
}

fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        _ => "DELETE",
    }
}

/// The methods of `pairs` whose operation `m` offers (for `Allow`).
fn allowed(m: &ModelSpec, pairs: &[(Method, Operation)]) -> Vec<&'static str> {
    pairs
        .iter()
        .filter(|(_, op)| m.operations.contains(op))
        .map(|(method, _)| method_name(method))
        .collect()
}

/// Resolves `method` `path` (404, 405).
pub fn resolve(spec: &ServiceSpec, method: &Method, path: &str) -> Result<Route, ApiError> {
    let fixed = match path {
        "/health" => Some(Route::Health),
        "/ready" => Some(Route::Ready),
        "/metrics" => Some(Route::Metrics),
        "/openapi.json" => Some(Route::OpenApi),
        "/_cluster/status" => Some(Route::ClusterStatus),
        "/api/_audit" => Some(Route::Audit),
        _ => None,
    };
    if let Some(route) = fixed {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(&["GET"]));
        }
        return Ok(route);
    }
    if let Some(rpc) = path.strip_prefix("/_raft/") {
        return Ok(Route::Raft(rpc.to_string()));
    }
    if path == "/_cluster/members" || path.starts_with("/_cluster/members/") {
        return Ok(Route::Members);
    }
    if let Some(index) = spec.projections.iter().position(|p| p.path == path) {
        if method != Method::GET {
            return Err(ApiError::method_not_allowed(&["GET"]));
        }
        return Ok(Route::Projection(index));
    }
    let nothing = || ApiError::not_found(format!("nothing at {path}"));
    for (index, m) in spec.models.iter().enumerate() {
        if path == m.path {
            // The `Allow` of a 405, made only for one.
            let refused = || {
                let allow = allowed(
                    m,
                    &[
                        (Method::GET, Operation::List),
                        (Method::POST, Operation::Create),
                    ],
                );
                ApiError::method_not_allowed(&allow)
            };
            let op = match *method {
                Method::GET => Operation::List,
                Method::POST => Operation::Create,
                _ => return Err(refused()),
            };
            if !m.operations.contains(&op) {
                return Err(refused());
            }
            return Ok(model(index, ModelOp::Crud(op), None));
        }
        let Some(rest) = path
            .strip_prefix(m.path.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            continue;
        };
        // The change feed (no action takes its path: `validate` sees to it).
        if rest == "_events" && m.has(Operation::List) {
            if method != Method::GET {
                return Err(ApiError::method_not_allowed(&["GET"]));
            }
            return Ok(model(index, ModelOp::Events, None));
        }
        // A collection action's path is a fixed word; it wins over an id.
        let (raw_id, tail) = if m.actions.iter().any(|a| !a.on_record() && a.path == rest) {
            (None, Some(rest))
        } else {
            // A byte search: `split_once`'s pattern machinery costs a get more than the
            // rest of routing it.
            match rest.bytes().position(|b| b == b'/') {
                None => (Some(rest), None),
                Some(at) => (Some(&rest[..at]), Some(&rest[at + 1..])),
            }
        };
        let Some(tail) = tail else {
            let raw = raw_id.unwrap_or_default();
            let refused = || {
                let allow = allowed(
                    m,
                    &[
                        (Method::GET, Operation::Get),
                        (Method::PUT, Operation::Update),
                        (Method::PATCH, Operation::Patch),
                        (Method::DELETE, Operation::Delete),
                    ],
                );
                ApiError::method_not_allowed(&allow)
            };
            let op = match *method {
                Method::GET => Operation::Get,
                Method::PUT => Operation::Update,
                Method::PATCH => Operation::Patch,
                Method::DELETE => Operation::Delete,
                _ => return Err(refused()),
            };
            if !m.operations.contains(&op) {
                return Err(refused());
            }
            let id = Uuid::parse_str(raw).map_err(|_| {
                ApiError::not_found(format!("no {} with id \"{raw}\" (ids are UUIDs)", m.name))
            })?;
            return Ok(model(index, ModelOp::Crud(op), Some(id)));
        };
        // The history of a record of a model with a lifecycle (no action takes these
        // paths: `validate` sees to it).
        if let (true, Some(raw)) = (m.keeps_history(), raw_id) {
            let op = match (tail, tail.strip_prefix("versions/")) {
                ("history", _) => Some(Ok(ModelOp::History)),
                (_, Some(v)) if m.lifecycle.versioned.is_some() => {
                    Some(v.parse::<u64>().map(ModelOp::Version).map_err(|_| {
                        ApiError::not_found(format!("versions are numbered: no version \"{v}\""))
                    }))
                }
                _ => None,
            };
            if let Some(op) = op {
                if method != Method::GET {
                    return Err(ApiError::method_not_allowed(&["GET"]));
                }
                let id = Uuid::parse_str(raw)
                    .map_err(|_| ApiError::not_found(format!("no {} with id \"{raw}\"", m.name)))?;
                return Ok(model(index, op?, Some(id)));
            }
        }
        let candidates: Vec<(usize, &crate::spec::ActionSpec)> = m
            .actions
            .iter()
            .enumerate()
            .filter(|(_, a)| a.on_record() == raw_id.is_some() && a.tail() == tail)
            .collect();
        if candidates.is_empty() {
            return Err(nothing());
        }
        let Some((action, _)) = candidates.iter().find(|(_, a)| a.method == method.as_str()) else {
            let allow: Vec<&str> = candidates.iter().map(|(_, a)| a.method.as_str()).collect();
            return Err(ApiError::method_not_allowed(&allow));
        };
        let id = match raw_id {
            Some(raw) => Some(
                Uuid::parse_str(raw)
                    .map_err(|_| ApiError::not_found(format!("no {} with id \"{raw}\"", m.name)))?,
            ),
            None => None,
        };
        return Ok(model(index, ModelOp::Action(*action), id));
    }
    Err(nothing())
}

fn model(model: usize, op: ModelOp, id: Option<Uuid>) -> Route {
    Route::Model(ModelRoute { model, op, id })
}

/// Which listener a request came in on, and so which routes it may reach.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Plane {
    /// The public port of a node without a cluster listener: every route.
    #[default]
    All,
    /// The public port beside a cluster listener (`[cluster] listen`): no Raft messages.
    Public,
    /// The cluster listener: only what nodes send each other (Raft messages, the cluster
    /// status and membership changes), and `/health` and `/ready`.
    Cluster,
}

impl Plane {
    /// The 404 of a route this listener does not serve.
    fn refuses(self, route: &Route) -> Option<ApiError> {
        match (self, route) {
            (Plane::Public, Route::Raft(_)) => Some(ApiError::not_found(
                "Raft messages go to the cluster listener ([cluster] listen), not to this port",
            )),
            (
                Plane::Cluster,
                Route::Raft(_) | Route::ClusterStatus | Route::Members | Route::Health | Route::Ready,
            ) => None,
            (Plane::Cluster, _) => Some(ApiError::not_found(
                "this is the cluster listener: it serves /_raft/*, /_cluster/*, /health and /ready; the API is on the public port",
            )),
            _ => None,
        }
    }
}

/// The router stage: puts the request's [`Route`] in its facts.
#[derive(Clone)]
pub struct Router {
    /// The schema.
    pub spec: Arc<CompiledSpec>,
    /// The listener this stack serves.
    pub plane: Plane,
}

impl<B: Send + 'static> Step<B> for Router {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let routed = resolve(&self.spec.spec, req.method(), req.uri().path()).and_then(|r| {
            match self.plane.refuses(&r) {
                Some(e) => Err(e),
                None => Ok(r),
            }
        });
        match routed {
            Ok(route) => {
                facts.route = Some(route);
                next.answer(req, facts)
            }
            Err(e) => Reply::now(respond::problem(&e)),
        }
    }
}

/// The roles an operational route needs (None: anyone may, unauthenticated).
fn plane_roles<'a>(planes: &'a Planes, route: Option<&Route>) -> Option<&'a [String]> {
    let roles = match route? {
        Route::Metrics => &planes.metrics,
        Route::OpenApi => &planes.openapi,
        _ => return None,
    };
    (!roles.is_empty()).then_some(roles.as_slice())
}

/// The authentication stage: for the API (and `/metrics` or `/openapi.json` when roles
/// guard them), puts the caller (`Arc<Principal>`) in the request's facts.
#[derive(Clone)]
pub struct Authenticate {
    /// The tokens in force.
    pub live: Live,
    /// The roles of the operational routes.
    pub planes: Arc<Planes>,
}

impl<B: Send + 'static> Step<B> for Authenticate {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let route = facts.route.as_ref();
        if matches!(
            route,
            Some(Route::Model(_) | Route::Audit | Route::Projection(_))
        ) || plane_roles(&self.planes, route).is_some()
        {
            let header = req.headers().get(hyper::header::AUTHORIZATION);
            match self
                .live
                .tokens()
                .authenticate(header.map(|v| v.as_bytes()))
            {
                Ok(principal) => facts.principal = Some(principal),
                Err(e) => return Reply::now(respond::problem(&e)),
            }
        }
        next.answer(req, facts)
    }
}

/// The authorization stage: the caller must have one of the route's roles.
#[derive(Clone)]
pub struct Authorize {
    /// The schema.
    pub spec: Arc<CompiledSpec>,
    /// The roles of the operational routes.
    pub planes: Arc<Planes>,
}

impl<B: Send + 'static> Step<B> for Authorize {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let route = facts.route.as_ref();
        let who = facts.caller();
        if let Some(roles) = plane_roles(&self.planes, route) {
            let what = match route {
                Some(Route::Metrics) => "read the metrics",
                _ => "read the OpenAPI document",
            };
            if let Err(e) = authorize(who, roles, what) {
                return Reply::now(respond::problem(&e));
            }
        }
        if let Some(Route::Projection(index)) = route {
            let p = &self.spec.spec.projections[*index];
            if !who.may(&p.read) {
                let refused = authorize(who, &p.read, &format!("read {}", p.name));
                if let Err(e) = refused {
                    return Reply::now(respond::problem(&e));
                }
            }
        }
        if let Some(Route::Audit) = route {
            let roles = self
                .spec
                .spec
                .audit
                .as_ref()
                .map_or(&[][..], |a| &a.read[..]);
            if let Err(e) = authorize(who, roles, "read the audit log") {
                return Reply::now(respond::problem(&e));
            }
        }
        if let Some(Route::Model(route)) = route {
            let spec = &self.spec.spec;
            let roles = route.roles(spec);
            // The message is made only for a refusal: the hot path allocates nothing.
            // A right held only through `owner` lets the request in; the endpoint then
            // keeps it to the caller's own records (`auth::Access`).
            if !who.may(roles) && grant(route.model(spec), who, roles) != Grant::Own {
                let refused = authorize(who, roles, &route.what(spec));
                if let Err(e) = refused {
                    return Reply::now(respond::problem(&e));
                }
            }
        }
        next.answer(req, facts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Authenticator, TokenConfig};
    use crate::http::firewall::{Firewall, Rules};
    use crate::http::respond::Resp;
    use std::convert::Infallible;
    use std::time::Duration;
    use tower::Service;
    use tower::ServiceExt;

    const SPEC: &str = r#"{
      "service": {"name": "t"},
      "roles": [{"name": "editor", "inherits": []}],
      "models": [{
        "name": "Item", "snake": "item", "path": "/api/items",
        "operations": ["list", "get", "create", "delete"],
        "permissions": {"read": ["public"], "create": ["editor"], "update": ["editor"], "delete": ["editor"]},
        "fields": [{"name": "n", "type": {"kind": "int"}}],
        "actions": [
          {"name": "restock", "method": "POST", "path": "{id}/restock", "permission": ["editor"]},
          {"name": "report", "method": "GET", "path": "report", "permission": ["public"]}
        ]
      }]
    }"#;

    const TOKEN: &str = "lth_test_token";
    /// A token with no role.
    const PLAIN: &str = "lth_plain_token";

    fn stages() -> impl Service<Request<()>, Response = Resp, Error = Infallible> + Clone {
        let spec = Arc::new(CompiledSpec::from_json(SPEC).expect("spec"));
        let hash = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(TOKEN.as_bytes()));
        let plain = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(PLAIN.as_bytes()));
        let tokens = Authenticator::new(
            &[
                TokenConfig {
                    name: "ed".into(),
                    sha256: hash,
                    roles: vec!["editor".into()],
                    expires_at: None,
                },
                TokenConfig {
                    name: "plain".into(),
                    sha256: plain,
                    roles: vec![],
                    expires_at: None,
                },
            ],
            &spec,
        )
        .expect("tokens");
        let live = Live::new(
            Firewall::new(Rules::new(&Default::default(), vec![])),
            tokens,
        );
        // The endpoint answers with what the stages left: the route, and the caller.
        let endpoint = tower::service_fn(|req: Request<()>| async move {
            let route = crate::http::facts::route(req.extensions()).cloned();
            let who = crate::http::facts::principal(req.extensions()).map(|p| p.name.clone());
            Ok::<_, Infallible>(respond::json(
                200,
                &serde_json::json!({"route": format!("{route:?}"), "who": who}),
            ))
        });
        tower::ServiceBuilder::new()
            .layer(super::super::stage::StageLayer(Router {
                spec: spec.clone(),
                plane: Plane::All,
            }))
            .layer(super::super::stage::StageLayer(Authenticate {
                live,
                planes: Default::default(),
            }))
            .layer(super::super::stage::StageLayer(Authorize {
                spec,
                planes: Default::default(),
            }))
            .layer(super::super::stage::StageLayer(
                super::super::pipeline::Deadline {
                    deadline: Duration::from_secs(5),
                },
            ))
            .layer(super::super::stage::LeafLayer)
            .service(endpoint)
    }

    async fn ask(method: Method, path: &str, token: Option<&str>) -> (u16, String) {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        let req = b.body(()).expect("request");
        let r = match stages().oneshot(req).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = r.status().as_u16();
        let allow = r
            .headers()
            .get("allow")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = http_body_util::BodyExt::collect(r.into_body())
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        (
            status,
            format!("{allow}|{}", String::from_utf8_lossy(&body)),
        )
    }

    #[tokio::test]
    async fn the_router_resolves_once_with_404_and_405() {
        let id = Uuid::new_v4();
        let (s, text) = ask(Method::GET, "/api/items", None).await;
        assert_eq!(s, 200, "{text}");
        assert!(text.contains("Crud(List)"), "{text}");
        assert_eq!(ask(Method::GET, "/api/nothing", None).await.0, 404);
        let (s, text) = ask(Method::PUT, "/api/items", None).await;
        assert_eq!((s, text.split('|').next()), (405, Some("GET, POST")));
        // Update is not offered: 405 names what is.
        let (s, text) = ask(Method::PUT, &format!("/api/items/{id}"), Some(TOKEN)).await;
        assert_eq!((s, text.split('|').next()), (405, Some("GET, DELETE")));
        assert_eq!(ask(Method::GET, "/api/items/not-a-uuid", None).await.0, 404);
        let (s, text) = ask(Method::GET, "/api/items/report", None).await;
        assert_eq!(s, 200, "{text}");
        assert!(text.contains("Action(1)"), "{text}");
        let (s, text) = ask(
            Method::GET,
            &format!("/api/items/{id}/restock"),
            Some(TOKEN),
        )
        .await;
        assert_eq!((s, text.split('|').next()), (405, Some("POST")));
        assert_eq!(ask(Method::POST, "/health", None).await.0, 405);
        assert_eq!(ask(Method::GET, "/health", None).await.0, 200);
    }

    #[tokio::test]
    async fn authentication_and_authorization_happen_once_each() {
        let id = Uuid::new_v4();
        // A bad token is refused whatever the route needs.
        assert_eq!(ask(Method::GET, "/api/items", Some("wrong")).await.0, 401);
        // Anonymous: 401 where a role is needed; a token without the role would be 403.
        assert_eq!(ask(Method::POST, "/api/items", None).await.0, 401);
        assert_eq!(ask(Method::POST, "/api/items", Some(PLAIN)).await.0, 403);
        assert_eq!(ask(Method::GET, "/api/items", Some(PLAIN)).await.0, 200);
        let (s, text) = ask(Method::POST, "/api/items", Some(TOKEN)).await;
        assert_eq!(s, 200, "{text}");
        assert!(text.contains("\"who\":\"ed\""), "{text}");
        let (s, text) = ask(
            Method::POST,
            &format!("/api/items/{id}/restock"),
            Some(TOKEN),
        )
        .await;
        assert_eq!(s, 200, "{text}");
        assert!(text.contains(&id.to_string()), "{text}");
        assert_eq!(
            ask(Method::POST, &format!("/api/items/{id}/restock"), None)
                .await
                .0,
            401
        );
        // Operational routes need no token here.
        assert_eq!(ask(Method::GET, "/ready", Some("wrong")).await.0, 200);
    }
}
