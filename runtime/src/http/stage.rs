//! The machinery every stage of the pipeline is built from: a [`Step`] is what one stage
//! does around the rest of the pipeline; [`StageLayer`] makes it a tower layer; [`Next`]
//! is the rest of the pipeline as a stage calls it, by reference (a stage that only looks
//! at the request returns the rest's own answer); a [`Reply`] is an answer, there at once
//! or to wait for, so that a request answered within the pipeline's call (a get) goes
//! back through the stages without a future of each; [`Shared`] holds the rest behind one
//! reference count, so that cloning the outer service per request clones no stage below
//! it; [`Leaf`] puts any tower service (a test's endpoint) below a stage.
//!
//! A request's [`Facts`] go through the stages beside it, by reference: a stage reads and
//! sets them in place, and one that answers later (reading a body, writing) takes them
//! into its future. At the edges, where the pipeline is a tower service (a test's calls,
//! a [`Leaf`]'s service), they travel in the request's extensions instead; inside, they
//! cost no allocation and no lookup.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::Request;
use tower::{Layer, Service};

use super::facts::Facts;
use super::respond::Resp;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// An answer: there at once, or to wait for. Awaiting it gives the answer.
pub struct Reply(Answered);

enum Answered {
    /// There at once (None once it has been taken by a poll).
    Now(Option<Resp>),
    /// To wait for.
    Later(BoxFuture<Resp>),
}

impl Reply {
    /// An answer there at once.
    pub fn now(answer: Resp) -> Reply {
        Reply(Answered::Now(Some(answer)))
    }

    /// An answer to wait for.
    pub fn later(answer: impl Future<Output = Resp> + Send + 'static) -> Reply {
        Reply(Answered::Later(Box::pin(answer)))
    }

    /// The answer if it is there; otherwise the answer to wait for.
    ///
    /// # Panics
    /// On a reply that was awaited to its end already.
    pub fn ready(self) -> Result<Resp, Later> {
        match self.0 {
            Answered::Now(Some(r)) => Ok(r),
            Answered::Now(None) => panic!("a Reply used after it answered"),
            Answered::Later(answer) => Err(Later(answer)),
        }
    }

    /// The answer changed in place by `f`: at once for an answer that is there (without
    /// moving it out of the reply and back), otherwise once it comes.
    pub fn edit(mut self, f: impl FnOnce(&mut Resp) + Send + 'static) -> Reply {
        if let Some(r) = self.answered() {
            f(r);
            return self;
        }
        match self.ready() {
            Ok(r) => Reply::now(r),
            Err(later) => later.map(|mut r| {
                f(&mut r);
                r
            }),
        }
    }

    /// The answer, if it is there.
    pub fn answered(&mut self) -> Option<&mut Resp> {
        match &mut self.0 {
            Answered::Now(r) => r.as_mut(),
            Answered::Later(_) => None,
        }
    }
}

/// An answer to wait for (a [`Reply`] that was not there at once).
pub struct Later(BoxFuture<Resp>);

impl Later {
    /// The answer changed by `f` once it comes.
    pub fn map(self, f: impl FnOnce(Resp) -> Resp + Send + 'static) -> Reply {
        Reply::later(async move { f(self.await) })
    }
}

impl Future for Later {
    type Output = Resp;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resp> {
        self.0.as_mut().poll(cx)
    }
}

impl Future for Reply {
    type Output = Resp;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Resp> {
        match &mut self.0 {
            Answered::Now(r) => match r.take() {
                Some(r) => Poll::Ready(r),
                None => panic!("a Reply used after it answered"),
            },
            Answered::Later(answer) => answer.as_mut().poll(cx),
        }
    }
}

/// What one stage does around the rest of the pipeline (`next`).
///
/// A stage that only looks at the request hands it on with `next.answer(req, facts)` and
/// returns that reply as it is: no allocation and no copy of the request of its own. A
/// stage that also changes the answer edits that reply ([`Reply::edit`]): in place at once
/// when the answer is there, in a future (which holds the request, not this stage) when it
/// is not.
pub trait Step<B>: Clone + Send + Sync + 'static {
    /// Answers `req`, whose facts so far are `facts`, through `next` or not.
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply;
}

thread_local! {
    /// The synchronous time of the timed stages a [`Timed`] stage called (directly or
    /// not) while it ran: subtracted from its own.
    static NESTED: std::cell::Cell<std::time::Duration> =
        const { std::cell::Cell::new(std::time::Duration::ZERO) };
}

/// A stage whose own work is timed into `histogram` (and is a span of a traced request,
/// from its start for as long as its own work took): the time its `run` takes before it
/// hands the request on, without the stages after it. Stages that only look at the
/// request do all their work there; work a stage does inside the future it returns is
/// not counted.
#[derive(Clone)]
pub struct Timed<T> {
    /// The stage.
    pub step: T,
    /// Which stage it is (the name of its span in a traced request).
    pub stage: crate::domain::Stage,
    /// Where its time goes.
    pub histogram: crate::histogram::Histogram,
}

impl<B, T: Step<B>> Step<B> for Timed<T> {
    fn run(&self, next: &dyn Next<B>, req: Request<B>, facts: &mut Facts) -> Reply {
        let outer = NESTED.with(|n| n.replace(std::time::Duration::ZERO));
        let started = crate::clock::Instant::now();
        let answer = self.step.run(next, req, facts);
        let total = started.elapsed();
        let nested = NESTED.with(|n| n.get());
        let own = total.saturating_sub(nested);
        self.histogram.observe(own.as_secs_f64());
        crate::telemetry::record(self.stage, started, started + own);
        NESTED.with(|n| n.set(outer + total));
        answer
    }
}

/// Runs `work` (an endpoint answering within a stage's call) as time of none of the timed
/// stages it runs in: their own time leaves it out.
pub(crate) fn apart<T>(work: impl FnOnce() -> T) -> T {
    let started = crate::clock::Instant::now();
    let out = work();
    let took = started.elapsed();
    NESTED.with(|n| n.set(n.get() + took));
    out
}

/// A part of the pipeline that answers through a shared reference: a stage calls the
/// rest of the pipeline through it without cloning any stage below it.
pub trait Next<B>: Send + Sync + 'static {
    /// Answers `req`, whose facts so far are `facts`.
    fn answer(&self, req: Request<B>, facts: &mut Facts) -> Reply;
}

/// The rest of the pipeline as a stage holds it: shared (a stage that must wait on the
/// rest, like the body stage, clones one reference into its future), and a tower service.
pub struct Shared<S>(Arc<S>);

impl<S> Shared<S> {
    /// Shares `inner`.
    pub fn new(inner: S) -> Self {
        Shared(Arc::new(inner))
    }

    /// Answers `req` (with `facts`) through the shared part.
    pub fn answer<B>(&self, req: Request<B>, facts: &mut Facts) -> Reply
    where
        S: Next<B>,
    {
        self.0.answer(req, facts)
    }
}

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<S: Next<B>, B> Service<Request<B>> for Shared<S> {
    type Response = Resp;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (req, mut facts) = carried(req);
        Answer(self.0.answer(req, &mut facts))
    }
}

/// A stage as a tower layer: wraps the rest of the pipeline in a [`Stage`].
#[derive(Clone, Debug)]
pub struct StageLayer<T>(pub T);

impl<S, T: Clone> Layer<S> for StageLayer<T> {
    type Service = Stage<S, T>;

    fn layer(&self, inner: S) -> Self::Service {
        Stage {
            inner: Shared(Arc::new(inner)),
            step: self.0.clone(),
        }
    }
}

/// A stage in front of the rest of the pipeline (`S`), as a tower service.
pub struct Stage<S, T> {
    inner: Shared<S>,
    step: T,
}

impl<S, T: Clone> Clone for Stage<S, T> {
    fn clone(&self) -> Self {
        Stage {
            inner: self.inner.clone(),
            step: self.step.clone(),
        }
    }
}

impl<S, T, B> Next<B> for Stage<S, T>
where
    S: Next<B>,
    T: Step<B>,
    B: 'static,
{
    fn answer(&self, req: Request<B>, facts: &mut Facts) -> Reply {
        self.step.run(self.inner.0.as_ref(), req, facts)
    }
}

impl<S, T, B> Service<Request<B>> for Stage<S, T>
where
    S: Next<B>,
    T: Step<B>,
    B: 'static,
{
    type Response = Resp;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (req, mut facts) = carried(req);
        Answer(self.answer(req, &mut facts))
    }
}

/// Any tower service as a part of the pipeline (cloned for each request): how a service
/// that is not a stage (a test's endpoint) sits below a stage.
#[cfg(any(test, feature = "testing"))]
#[derive(Clone)]
pub struct Leaf<S>(pub S);

/// Wraps the rest of the pipeline in a [`Leaf`].
#[cfg(any(test, feature = "testing"))]
#[derive(Clone, Copy, Debug, Default)]
pub struct LeafLayer;

#[cfg(any(test, feature = "testing"))]
impl<S> Layer<S> for LeafLayer {
    type Service = Leaf<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Leaf(inner)
    }
}

#[cfg(any(test, feature = "testing"))]
impl<S, B> Next<B> for Leaf<S>
where
    S: Service<Request<B>, Response = Resp, Error = Infallible> + Clone + Send + Sync + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    fn answer(&self, mut req: Request<B>, facts: &mut Facts) -> Reply {
        req.extensions_mut().insert(std::mem::take(facts));
        Reply::later(call(self.0.clone(), req))
    }
}

/// A request that comes in as a tower service's (a test's), and the facts it carries in
/// its extensions (none yet when it carries none).
pub(crate) fn carried<B>(mut req: Request<B>) -> (Request<B>, Facts) {
    let facts = req.extensions_mut().remove::<Facts>().unwrap_or_default();
    (req, facts)
}

/// The answer of a stage, as a tower service's future (which cannot fail).
pub struct Answer(pub(crate) Reply);

impl Future for Answer {
    type Output = Result<Resp, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(Ok)
    }
}

/// Calls the rest of the pipeline (whose error type is `Infallible`).
pub(crate) async fn call<S, B>(mut inner: S, req: Request<B>) -> Resp
where
    S: Service<Request<B>, Response = Resp, Error = Infallible>,
{
    match inner.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::histogram::Histogram;

    /// A stage that only hands the request on.
    #[derive(Clone)]
    struct Pass;

    impl Step<()> for Pass {
        fn run(&self, next: &dyn Next<()>, req: Request<()>, facts: &mut Facts) -> Reply {
            next.answer(req, facts)
        }
    }

    /// An endpoint that answers within its call, after 30 ms of work (`apart` or not).
    struct Busy {
        apart: bool,
    }

    impl Next<()> for Busy {
        fn answer(&self, _: Request<()>, _: &mut Facts) -> Reply {
            let work = || {
                std::thread::sleep(std::time::Duration::from_millis(30));
                super::super::respond::empty(204)
            };
            Reply::now(if self.apart { apart(work) } else { work() })
        }
    }

    /// The time a stage records as its own, around `endpoint`.
    fn own_time(endpoint: &Busy) -> f64 {
        let timed = Timed {
            step: Pass,
            stage: crate::domain::Stage::Authorize,
            histogram: Histogram::new([1.0]),
        };
        drop(timed.run(endpoint, Request::new(()), &mut Facts::default()));
        timed.histogram.get().0
    }

    #[test]
    fn an_endpoint_answering_within_a_stages_call_is_not_that_stages_time() {
        assert!(own_time(&Busy { apart: false }) >= 0.03);
        assert!(own_time(&Busy { apart: true }) < 0.015);
    }
}
