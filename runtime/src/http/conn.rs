//! One connection as hyper serves it: the pipeline called for each of its requests, and
//! its header timeout (`[server] header_timeout_secs`).
//!
//! A connection waits for a request's head from its start, and again from the end of each
//! answer's body; a wait longer than the header timeout closes it (a client that never
//! finishes its headers, or an idle keep-alive connection). hyper's own header timeout
//! arms a runtime timer for every request, an allocation and two trips through the timer
//! wheel; here one timer per connection (the [`HeadWait::expired`] watch) checks the
//! wait, and a request only stores a mark (busy) and a time (waiting again).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};

use super::respond::{Body, Resp};
use super::stage::{Next, Reply};

/// Since when a connection waits for a request's head, or that it does not (a request is
/// being answered).
pub(crate) struct HeadWait {
    /// Milliseconds since `opened`, or [`HeadWait::BUSY`].
    since: AtomicU64,
    opened: crate::clock::Instant,
}

impl HeadWait {
    const BUSY: u64 = u64::MAX;

    /// A connection opened now, waiting for its first head.
    pub(crate) fn new() -> Arc<HeadWait> {
        Arc::new(HeadWait {
            since: AtomicU64::new(0),
            opened: crate::clock::Instant::now(),
        })
    }

    fn busy(&self) {
        self.since.store(Self::BUSY, Ordering::Relaxed);
    }

    fn waiting(&self) {
        // Rounded up, so that a wait is never taken for longer than it was.
        let ms = self.opened.elapsed().as_micros().div_ceil(1000);
        self.since
            .store(u64::try_from(ms).unwrap_or(Self::BUSY - 1), Ordering::Relaxed);
    }

    /// Ends when the connection has waited for a head for longer than `timeout`.
    pub(crate) async fn expired(&self, timeout: Duration) {
        loop {
            let since = self.since.load(Ordering::Relaxed);
            let sleep = if since == Self::BUSY {
                timeout
            } else {
                let waited = self
                    .opened
                    .elapsed()
                    .saturating_sub(Duration::from_millis(since));
                if waited >= timeout {
                    return;
                }
                timeout - waited
            };
            tokio::time::sleep(sleep).await;
        }
    }
}

/// The pipeline (`stack`) as hyper calls it for the requests of one connection: each
/// request gets the connection's facts; the connection is busy from the request's head
/// to the end of its answer's body.
pub(crate) struct Serve<S> {
    pub(crate) stack: S,
    pub(crate) peer: SocketAddr,
    pub(crate) wait: Arc<HeadWait>,
}

impl<S: Next<Incoming>> hyper::service::Service<Request<Incoming>> for Serve<S> {
    type Response = Response<Sent>;
    type Error = Infallible;
    type Future = Serving;

    fn call(&self, mut req: Request<Incoming>) -> Serving {
        self.wait.busy();
        req.extensions_mut()
            .insert(super::facts::Facts::from_peer(self.peer));
        Serving {
            reply: self.stack.answer(req),
            wait: Some(self.wait.clone()),
        }
    }
}

/// The answer to one request of a connection.
pub(crate) struct Serving {
    reply: Reply,
    wait: Option<Arc<HeadWait>>,
}

impl Future for Serving {
    type Output = Result<Response<Sent>, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let r: Resp = match Pin::new(&mut this.reply).poll(cx) {
            Poll::Ready(r) => r,
            Poll::Pending => return Poll::Pending,
        };
        let wait = this.wait.take();
        Poll::Ready(Ok(r.map(|body| Sent { body, wait })))
    }
}

/// An answer's body, as hyper sends it: once hyper is done with it (sent, or the
/// connection failed), the connection waits for its next head.
pub(crate) struct Sent {
    body: Body,
    wait: Option<Arc<HeadWait>>,
}

impl Drop for Sent {
    fn drop(&mut self) {
        if let Some(wait) = &self.wait {
            wait.waiting();
        }
    }
}

impl hyper::body::Body for Sent {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wait_expires_only_while_no_request_is_answered() {
        let wait = HeadWait::new();
        let timeout = Duration::from_millis(300);
        // Busy: a long answer (a change feed) never expires the connection.
        wait.busy();
        let watch = wait.expired(timeout);
        tokio::pin!(watch);
        let busy = tokio::time::timeout(Duration::from_millis(1000), watch.as_mut()).await;
        assert!(busy.is_err(), "expired while busy");
        // Its body is sent: the wait for the next head starts then, and runs out a
        // timeout later.
        wait.waiting();
        let started = crate::clock::Instant::now();
        let expired = tokio::time::timeout(Duration::from_secs(30), watch).await;
        assert!(expired.is_ok(), "never expired");
        // Not before the timeout (on the connection's clock; the runtime's timer has a
        // millisecond's grain).
        let waited = started.elapsed();
        assert!(waited + Duration::from_millis(1) >= timeout, "{waited:?}");
    }
}
