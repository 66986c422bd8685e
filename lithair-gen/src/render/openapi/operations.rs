//! The OpenAPI paths of no model (`/health`, `/ready`, `/metrics`, `/_cluster/*`,
//! `/openapi.json`) and the answers every operation may give besides its own (405 with
//! `Allow`, 429 and 503 with `Retry-After`, and the refusals of a body).

use super::*;

/// A new member's `addr`: `host:port` (a name, an IPv4 address or a bracketed IPv6
/// address, and a port up to 65535), as the service checks it.
const MEMBER_ADDR: &str = r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$";

/// `/health`, `/ready`, `/metrics`, `/_cluster/status`, `/_cluster/members` and
/// `/openapi.json`.
pub(super) fn operational_paths(paths: &mut Map<String, Value>) {
    let tag = json!(["Operations"]);
    let status = |v: &str| json!({"type": "object", "properties": {"status": {"type": "string", "enum": [v]}}, "required": ["status"]});
    paths.insert("/health".into(), json!({"get": {"tags": tag, "operationId": "health", "summary": "The process is up",
        "security": [], "responses": {"200": {"description": "Up.", "content": {"application/json": {"schema": status("ok")}}}}}}));
    paths.insert("/ready".into(), json!({"get": {"tags": tag, "operationId": "ready", "summary": "The node takes writes",
        "security": [], "responses": {
            "200": {"description": "Ready.", "content": {"application/json": {"schema": status("ready")}}},
            "503": {"description": "Not ready (no quorum, a storage fault, shutting down): `reason` says why.", "content": {"application/json": {"schema": {
                "type": "object", "properties": {"status": {"type": "string", "enum": ["unready"]}, "reason": {"type": "string"}}, "required": ["status", "reason"]}}}}}}}));
    paths.insert("/metrics".into(), json!({"get": {"tags": tag, "operationId": "metrics", "summary": "Prometheus metrics",
        "description": "Open unless `[server] metrics_roles` names roles.",
        "responses": {"200": {"description": "The metrics, in the OpenMetrics text format (which Prometheus reads); labelled `text/plain` for a client whose `Accept` names `text/plain` and not OpenMetrics.", "content": {"application/openmetrics-text": {"schema": {"type": "string"}}, "text/plain": {"schema": {"type": "string"}}}},
            "401": problem_response("No or bad token (when roles guard it)."), "403": problem_response("Missing role.")}}}));
    paths.insert("/_cluster/status".into(), json!({"get": {"tags": tag, "operationId": "cluster_status", "summary": "This node's view of its Raft cluster",
        "security": [], "responses": {"200": {"description": "The node's id, the leader, the term, the last applied entry and the members.",
            "content": {"application/json": {"schema": {"type": "object"}}}}}}}));
    let admin = "The roles of `[cluster] admin_roles`, or the cluster secret in `x-lithair-cluster-secret` on a cluster that has one. A follower hands the change to the leader.";
    let member_answers = |extra: Value| {
        let mut r = json!({"200": {"description": "The change is made: the node's view of the cluster after it.", "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": problem_response("No or bad token."), "403": problem_response("Missing role."),
            "409": problem_response("The change does not fit the cluster (a member of another cluster, the last voter)."),
            "502": problem_response("This node could not reach the leader to hand the change on.")});
        if let (Some(r), Value::Object(extra)) = (r.as_object_mut(), extra) {
            r.extend(extra);
        }
        r
    };
    paths.insert("/_cluster/members".into(), json!({"post": {"tags": tag, "operationId": "add_member", "summary": "Add a node to the cluster (a learner until it has caught up, then a voter)",
        "description": admin,
        "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "properties": {
            "id": {"type": "integer", "minimum": 0, "maximum": u64::MAX, "description": "The new node's id."},
            "addr": {"type": "string", "pattern": MEMBER_ADDR, "description": "Its cluster listener, `host:port`."}}, "required": ["id", "addr"]}}}},
        "responses": member_answers(json!({}))}}));
    paths.insert("/_cluster/members/{id}".into(), json!({"delete": {"tags": tag, "operationId": "remove_member", "summary": "Remove a node from the cluster",
        "description": admin,
        "parameters": [{"name": "id", "in": "path", "required": true, "schema": {"type": "integer", "minimum": 0, "maximum": u64::MAX}}],
        "responses": member_answers(json!({"404": problem_response("No such path (a member id is a number).")}))}}));
    paths.insert("/openapi.json".into(), json!({"get": {"tags": tag, "operationId": "openapi", "summary": "The OpenAPI document",
        "description": "Open unless `[server] openapi_roles` names roles.",
        "responses": {"200": {"description": "The OpenAPI 3.1 document.", "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": problem_response("No or bad token (when roles guard it)."), "403": problem_response("Missing role.")}}}));
}

/// The answers every operation may give besides its own: 405 with `Allow` (the path's
/// methods) for a method the path does not take, 429 from the rate limit and 503
/// (overloaded, no quorum, the request's deadline), both with `Retry-After`; and for an
/// operation with a body, 400 (malformed JSON), 408, 413 and 415.
pub(super) fn common_responses(paths: &mut Map<String, Value>) {
    let retry = json!({"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}});
    for path in paths.values_mut() {
        let Some(ops) = path.as_object_mut() else {
            continue;
        };
        let allow: Vec<String> = ops
            .keys()
            .filter(|m| *m != "parameters")
            .map(|m| m.to_uppercase())
            .collect();
        let allow = allow.join(", ");
        for op in ops.values_mut() {
            let has_body = op.get("requestBody").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut not_allowed = problem_response(&format!(
                "The path does not take the request's method; `Allow` lists those it takes: {allow}."
            ));
            not_allowed["headers"] = json!({"Allow": {"description": "The methods the path takes.", "schema": {"type": "string", "enum": [allow]}}});
            responses.entry("405".to_string()).or_insert(not_allowed);
            let mut with_retry = |code: &str, description: &str| {
                let mut r = problem_response(description);
                r["headers"] = retry.clone();
                responses.entry(code.to_string()).or_insert(r);
            };
            with_retry(
                "429",
                "Too many requests from this address (the firewall's rate limit).",
            );
            with_retry("503", "Not answered now: too many writes waiting, no quorum, or the request's deadline passed.");
            if has_body {
                responses
                    .entry("400".to_string())
                    .or_insert_with(|| problem_response("Malformed JSON."));
                responses.entry("408".to_string()).or_insert_with(|| {
                    problem_response(
                        "The body did not arrive in time (`[server] body_timeout_ms`).",
                    )
                });
                responses
                    .entry("413".to_string())
                    .or_insert_with(|| problem_response("Body too large."));
                responses
                    .entry("415".to_string())
                    .or_insert_with(|| problem_response("Not JSON."));
            }
        }
    }
}
