//! The bridge between the runtime, which works on JSON records, and the user's handlers
//! in `src/handlers/`, which work on the generated structs.
//!
//! A model's handlers implement [`Hooks<R>`] for its record struct `R`: every hook has a
//! default that does nothing, so a hook added here later breaks no handler file. The
//! model's actions are the generated `<Model>Actions` trait (it depends on the schema);
//! the generated file hands the handlers and its action router to [`typed_hooks`], which
//! makes the JSON-level, object-safe [`ModelHooks`] the engine calls. A generated
//! service's builder takes each model's handlers as given in `main.rs` or made with
//! `Default` ([`Given`], [`ByDefault`], [`Slot`]).

use std::future::Future;
use std::pin::Pin;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::auth::Principal;

use crate::error::{ApiError, FieldError};
use crate::spec::Operation;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a `before_*` hook answers: go on, or refuse with an error.
pub type HookResult = Result<(), ApiError>;

/// What an action answers.
pub type ActionResult = Result<ActionResponse, ApiError>;

/// Who is asking, and for what.
#[derive(Clone, Debug)]
pub struct HookContext {
    /// The caller.
    pub principal: Principal,
    /// The model.
    pub model: String,
    /// The operation.
    pub operation: Operation,
    /// The custom action whose handler is writing (its writes go through `ActionContext`),
    /// if one is.
    pub action: Option<String>,
}

/// An action's answer: a status and a JSON body.
#[derive(Clone, Debug, PartialEq)]
pub struct ActionResponse {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Value,
}

impl ActionResponse {
    /// 200 with a JSON body.
    pub fn ok(body: Value) -> Self {
        ActionResponse { status: 200, body }
    }

    /// Any status with a JSON body.
    pub fn with_status(status: u16, body: Value) -> Self {
        ActionResponse { status, body }
    }
}

pub use crate::engine::action::{ActionContext, Committed, ModelRecord};

/// The runtime's view of a model's hooks: JSON records, object-safe.
///
/// `before_create` and `before_update` run the user's `before_*` hook, then `validate` on
/// the result, converting the record to its struct once; they answer whether the hook
/// changed the record.
pub trait ModelHooks: Send + Sync {
    /// Before create; may change the record.
    fn before_create(
        &self,
        ctx: &HookContext,
        record: &mut Map<String, Value>,
    ) -> Result<bool, ApiError>;
    /// After create.
    fn after_create(&self, ctx: &HookContext, record: &Map<String, Value>);
    /// Before update; may change `new`.
    fn before_update(
        &self,
        ctx: &HookContext,
        old: &Map<String, Value>,
        new: &mut Map<String, Value>,
    ) -> Result<bool, ApiError>;
    /// After update.
    fn after_update(&self, ctx: &HookContext, old: &Map<String, Value>, new: &Map<String, Value>);
    /// Before delete.
    fn before_delete(&self, ctx: &HookContext, record: &Map<String, Value>) -> HookResult;
    /// After delete.
    fn after_delete(&self, ctx: &HookContext, record: &Map<String, Value>);
    /// Runs action `name`.
    fn action<'a>(
        &'a self,
        name: &'a str,
        ctx: ActionContext,
        id: Option<Uuid>,
        body: Value,
    ) -> BoxFuture<'a, ActionResult>;
}

/// The hooks of a model whose records are `R` (the generated struct): implement it for
/// the model's handlers in `src/handlers/<model>.rs`, overriding the hooks you need.
///
/// Hooks run on the node that received the request: `before_*` before the change is
/// proposed to the store (they may change the record, or refuse with an error), `after_*`
/// once it is committed.
pub trait Hooks<R>: Send + Sync + 'static {
    /// Runs before a record is created: change it, or refuse with an error.
    fn before_create(&self, _ctx: &HookContext, _record: &mut R) -> HookResult {
        Ok(())
    }

    /// Runs after a record was created and stored.
    fn after_create(&self, _ctx: &HookContext, _record: &R) {}

    /// Runs before a record is replaced or patched: change `new`, or refuse with an error.
    fn before_update(&self, _ctx: &HookContext, _old: &R, _new: &mut R) -> HookResult {
        Ok(())
    }

    /// Runs after a record was updated and stored.
    fn after_update(&self, _ctx: &HookContext, _old: &R, _new: &R) {}

    /// Runs before a record is deleted: refuse with an error to keep it.
    fn before_delete(&self, _ctx: &HookContext, _record: &R) -> HookResult {
        Ok(())
    }

    /// Runs after a record was deleted.
    fn after_delete(&self, _ctx: &HookContext, _record: &R) {}

    /// Extra checks on every create and update: after the schema's rules passed on the
    /// request and after `before_create` or `before_update` ran, on the record as the
    /// hook left it (a record the hook changed is then checked against the schema's
    /// rules again). Return every problem at once; they are answered as one 422.
    fn validate(&self, _ctx: &HookContext, _record: &R) -> Vec<FieldError> {
        Vec::new()
    }
}

/// Routes an action call to the handlers' method of that name (the generated file
/// writes one per model, from the schema's actions).
pub type ActionFn<H> =
    for<'a> fn(&'a H, &'a str, ActionContext, Option<Uuid>, Value) -> BoxFuture<'a, ActionResult>;

/// Wraps a model's handlers as [`ModelHooks`]: `hooks` for its hooks, `actions` to run
/// its actions.
pub fn typed_hooks<R, H>(hooks: H, actions: ActionFn<H>) -> Box<dyn ModelHooks>
where
    R: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static,
    H: Hooks<R>,
{
    Box::new(Typed {
        hooks,
        actions,
        _record: std::marker::PhantomData::<fn() -> R>,
    })
}

/// A model's handlers, given to a generated service's builder (in `main.rs`).
pub struct Given<H>(pub H);

/// A model's handlers made with `Default` when the service is built.
pub struct ByDefault<H>(std::marker::PhantomData<fn() -> H>);

impl<H> ByDefault<H> {
    /// The handlers `H::default()`, made when the service is built.
    pub fn new() -> Self {
        ByDefault(std::marker::PhantomData)
    }
}

impl<H> Default for ByDefault<H> {
    fn default() -> Self {
        Self::new()
    }
}

/// A slot of a generated service's builder: the handlers it holds or makes. Only a slot
/// left to `Default` needs its handlers to implement `Default`.
pub trait Slot {
    /// The handlers.
    type Handlers;
    /// The handlers, given or made.
    fn take(self) -> Self::Handlers;
}

impl<H> Slot for Given<H> {
    type Handlers = H;
    fn take(self) -> H {
        self.0
    }
}

impl<H: Default> Slot for ByDefault<H> {
    type Handlers = H;
    fn take(self) -> H {
        H::default()
    }
}

struct Typed<R, H> {
    hooks: H,
    actions: ActionFn<H>,
    _record: std::marker::PhantomData<fn() -> R>,
}

/// The record as its struct, read straight from the map (no copy of the map).
fn to_typed<R: DeserializeOwned>(record: &Map<String, Value>) -> Result<R, ApiError> {
    R::deserialize(record)
        .map_err(|e| ApiError::internal(format!("record does not fit its struct: {e}")))
}

fn from_typed<R: Serialize>(record: &R) -> Result<Map<String, Value>, ApiError> {
    match serde_json::to_value(record) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(ApiError::internal("a record serialised to a non-object")),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// Whether two JSON values are the same value of a field: numbers by value (`5` and
/// `5.0`), RFC 3339 timestamps by instant, lists and objects item by item.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x == y || x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => {
            x == y
                || matches!(
                    (
                        chrono::DateTime::parse_from_rfc3339(x),
                        chrono::DateTime::parse_from_rfc3339(y)
                    ),
                    (Ok(p), Ok(q)) if p == q
                )
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Logs an `after_*` hook that did not run: the write is done (it cannot be refused any
/// more), but the record did not convert to the generated struct, so the user's code did
/// not see it. A record written under an older schema that the struct cannot hold is the
/// usual cause.
fn skipped(hook: &str, ctx: &HookContext, e: &ApiError) {
    tracing::error!(
        hook,
        model = %ctx.model,
        principal = %ctx.principal.name,
        error = %e.detail,
        "a hook did not run: the record does not convert to its generated struct"
    );
}

impl<R, H> Typed<R, H>
where
    R: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static,
    H: Hooks<R>,
{
    /// Validates the hook's result and writes it back if it changed.
    fn finish(
        &self,
        ctx: &HookContext,
        original: &R,
        r: R,
        record: &mut Map<String, Value>,
    ) -> Result<bool, ApiError> {
        let errors = self.hooks.validate(ctx, &r);
        if !errors.is_empty() {
            return Err(ApiError::invalid(errors));
        }
        if r == *original {
            return Ok(false);
        }
        // The struct writes every field in its own spelling (`5.0` for a float the
        // client sent as `5`, a timestamp in another offset): a field whose value the
        // hook left as it was keeps the text it had, so no change is recorded for it.
        let mut written = from_typed(&r)?;
        for (k, v) in written.iter_mut() {
            if let Some(before) = record.get(k).filter(|before| same_value(before, v)) {
                *v = before.clone();
            }
        }
        if written == *record {
            return Ok(false);
        }
        *record = written;
        Ok(true)
    }
}

impl<R, H> ModelHooks for Typed<R, H>
where
    R: Serialize + DeserializeOwned + Clone + PartialEq + Send + Sync + 'static,
    H: Hooks<R>,
{
    fn before_create(
        &self,
        ctx: &HookContext,
        record: &mut Map<String, Value>,
    ) -> Result<bool, ApiError> {
        let original: R = to_typed(record)?;
        let mut r = original.clone();
        self.hooks.before_create(ctx, &mut r)?;
        self.finish(ctx, &original, r, record)
    }

    fn after_create(&self, ctx: &HookContext, record: &Map<String, Value>) {
        match to_typed::<R>(record) {
            Ok(r) => self.hooks.after_create(ctx, &r),
            Err(e) => skipped("after_create", ctx, &e),
        }
    }

    fn before_update(
        &self,
        ctx: &HookContext,
        old: &Map<String, Value>,
        new: &mut Map<String, Value>,
    ) -> Result<bool, ApiError> {
        let o: R = to_typed(old)?;
        let original: R = to_typed(new)?;
        let mut n = original.clone();
        self.hooks.before_update(ctx, &o, &mut n)?;
        self.finish(ctx, &original, n, new)
    }

    fn after_update(&self, ctx: &HookContext, old: &Map<String, Value>, new: &Map<String, Value>) {
        match (to_typed::<R>(old), to_typed::<R>(new)) {
            (Ok(o), Ok(n)) => self.hooks.after_update(ctx, &o, &n),
            (Err(e), _) | (_, Err(e)) => skipped("after_update", ctx, &e),
        }
    }

    fn before_delete(&self, ctx: &HookContext, record: &Map<String, Value>) -> HookResult {
        self.hooks.before_delete(ctx, &to_typed(record)?)
    }

    fn after_delete(&self, ctx: &HookContext, record: &Map<String, Value>) {
        match to_typed::<R>(record) {
            Ok(r) => self.hooks.after_delete(ctx, &r),
            Err(e) => skipped("after_delete", ctx, &e),
        }
    }

    fn action<'a>(
        &'a self,
        name: &'a str,
        ctx: ActionContext,
        id: Option<Uuid>,
        body: Value,
    ) -> BoxFuture<'a, ActionResult> {
        (self.actions)(&self.hooks, name, ctx, id, body)
    }
}

/// A typed action's input, from its body (checked against the action's `input` fields
/// before the handler runs).
pub fn action_input<T: DeserializeOwned>(body: Value) -> Result<T, ApiError> {
    T::deserialize(body).map_err(|e| {
        ApiError::internal(format!(
            "a checked action body does not fit its struct: {e}"
        ))
    })
}

/// A typed action's answer: 200 with `output` as JSON.
pub fn action_output<T: Serialize>(output: &T) -> ActionResult {
    serde_json::to_value(output)
        .map(ActionResponse::ok)
        .map_err(ApiError::internal)
}

/// The action router of handlers without actions.
pub fn no_actions<'a, H>(
    _: &'a H,
    name: &'a str,
    _: ActionContext,
    _: Option<Uuid>,
    _: Value,
) -> BoxFuture<'a, ActionResult> {
    Box::pin(async move { Err(ApiError::unknown_action(name)) })
}

/// Hooks that do nothing (a model without handlers).
pub struct NoHooks;

impl ModelHooks for NoHooks {
    fn before_create(&self, _: &HookContext, _: &mut Map<String, Value>) -> Result<bool, ApiError> {
        Ok(false)
    }
    fn after_create(&self, _: &HookContext, _: &Map<String, Value>) {}
    fn before_update(
        &self,
        _: &HookContext,
        _: &Map<String, Value>,
        _: &mut Map<String, Value>,
    ) -> Result<bool, ApiError> {
        Ok(false)
    }
    fn after_update(&self, _: &HookContext, _: &Map<String, Value>, _: &Map<String, Value>) {}
    fn before_delete(&self, _: &HookContext, _: &Map<String, Value>) -> HookResult {
        Ok(())
    }
    fn after_delete(&self, _: &HookContext, _: &Map<String, Value>) {}
    fn action<'a>(
        &'a self,
        name: &'a str,
        ctx: ActionContext,
        id: Option<Uuid>,
        body: Value,
    ) -> BoxFuture<'a, ActionResult> {
        no_actions(self, name, ctx, id, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Item {
        n: i64,
    }

    /// Counts the `after_*` hooks that ran.
    struct Counting(Arc<AtomicU64>);

    impl Hooks<Item> for Counting {
        fn after_create(&self, _: &HookContext, _: &Item) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn after_update(&self, _: &HookContext, _: &Item, _: &Item) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
        fn after_delete(&self, _: &HookContext, _: &Item) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
    struct Timed {
        n: i64,
        price: f64,
        at: chrono::DateTime<chrono::FixedOffset>,
    }

    /// Bumps `n` and rewrites `at` as the same instant in UTC.
    struct Bumps;

    impl Hooks<Timed> for Bumps {
        fn before_create(&self, _: &HookContext, r: &mut Timed) -> HookResult {
            r.n += 1;
            r.at = r
                .at
                .with_timezone(&chrono::FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()));
            Ok(())
        }
    }

    #[test]
    fn a_field_a_hook_leaves_at_the_same_value_keeps_its_text() {
        let hooks = typed_hooks::<Timed, _>(Bumps, no_actions);
        let ctx = HookContext {
            principal: Principal::anonymous(),
            model: "Timed".into(),
            operation: Operation::Create,
            action: None,
        };
        let Value::Object(mut record) =
            serde_json::json!({"n": 1, "price": 5, "at": "2024-01-01T10:00:00+02:00"})
        else {
            unreachable!("an object literal")
        };
        assert_eq!(hooks.before_create(&ctx, &mut record).ok(), Some(true));
        // `n` changed; `price` stays the integer 5 (not 5.0), `at` its own offset.
        assert_eq!(
            Value::Object(record),
            serde_json::json!({"n": 2, "price": 5, "at": "2024-01-01T10:00:00+02:00"})
        );
    }

    /// A log destination the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn an_after_hook_whose_record_does_not_convert_is_an_error_in_the_log() {
        let ran = Arc::new(AtomicU64::new(0));
        let hooks = typed_hooks::<Item, _>(Counting(ran.clone()), no_actions);
        let ctx = HookContext {
            principal: Principal::anonymous(),
            model: "Item".into(),
            operation: Operation::Create,
            action: None,
        };
        let good = serde_json::json!({"n": 1});
        let bad = serde_json::json!({"n": "not a number"});
        let (Value::Object(good), Value::Object(bad)) = (good, bad) else {
            unreachable!("object literals")
        };
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            hooks.after_create(&ctx, &good);
            hooks.after_create(&ctx, &bad);
            hooks.after_update(&ctx, &good, &bad);
            hooks.after_delete(&ctx, &bad);
        });
        assert_eq!(
            ran.load(Ordering::Relaxed),
            1,
            "only the good record reached a hook"
        );
        let text =
            String::from_utf8_lossy(&log.0.lock().unwrap_or_else(|p| p.into_inner())).to_string();
        for hook in ["after_create", "after_update", "after_delete"] {
            assert!(
                text.lines()
                    .any(|l| l.contains("ERROR") && l.contains(hook) && l.contains("did not run")),
                "no error for {hook} in:\n{text}"
            );
        }
    }
}
