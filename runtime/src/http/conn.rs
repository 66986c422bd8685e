//! One connection as hyper serves it: the pipeline called for each of its requests, its
//! header timeout (`[server] header_timeout_secs`) and its graceful shutdown.
//!
//! A connection waits for a request's head from its start, and again from the end of each
//! answer's body; a wait longer than the header timeout closes it (a client that never
//! finishes its headers, or an idle keep-alive connection). hyper's own header timeout
//! arms a runtime timer for every request, an allocation and two trips through the timer
//! wheel; here one timer per connection (the [`HeadWait::expired`] watch) checks the
//! wait, and a request only stores a mark (busy) and a time (waiting again).
//!
//! That timer and the server's shutdown are watched by a task of their own beside each
//! connection ([`watchdog`]), which raises a flag in the connection's [`Signals`] and wakes
//! it. The connection ([`Watched`]) reads the flags each time it runs: one load, where a
//! `select!` over the timer and the shutdown would poll both (registering the task with
//! each) at every wake-up of the connection, that is, for every request.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::server::graceful::GracefulConnection;

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
        self.since.store(
            u64::try_from(ms).unwrap_or(Self::BUSY - 1),
            Ordering::Relaxed,
        );
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

/// What a connection's [`watchdog`] tells it, and how it wakes it.
#[derive(Default)]
pub(crate) struct Signals {
    /// [`Signals::SHUTDOWN`], [`Signals::EXPIRED`].
    flags: AtomicU8,
    /// The connection's task, as it last registered.
    task: Mutex<Option<Waker>>,
    /// The connection has ended: its watchdog stops.
    ended: tokio::sync::Notify,
}

impl Signals {
    /// The server shuts down: finish the request in flight, then close.
    const SHUTDOWN: u8 = 1;
    /// The connection waited for a request's head longer than the header timeout: close.
    const EXPIRED: u8 = 1 << 1;

    /// Raises `flag` and wakes the connection.
    fn raise(&self, flag: u8) {
        // The flag is set before the waker is read, and the connection registers its
        // waker before it reads the flags: one of the two sees the other.
        self.flags.fetch_or(flag, Ordering::SeqCst);
        let task = self.task.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(task) = task {
            task.wake();
        }
    }
}

/// A connection served until it ends, or until its watchdog raises a flag: at
/// [`Signals::SHUTDOWN`] it finishes the request in flight and closes (hyper's graceful
/// shutdown), at [`Signals::EXPIRED`] it is closed at once (dropped).
pub(crate) struct Watched<C> {
    conn: Pin<Box<C>>,
    signals: Arc<Signals>,
    /// The waker the watchdog holds (a clone of the one of the poll that registered it).
    registered: Option<Waker>,
    closing: bool,
}

impl<C> Watched<C> {
    /// `conn`, watched through `signals`.
    pub(crate) fn new(conn: C, signals: Arc<Signals>) -> Self {
        Watched {
            conn: Box::pin(conn),
            signals,
            registered: None,
            closing: false,
        }
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = Result<(), C::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        // A task's waker stays the same from poll to poll: it is stored again only when it
        // changed (the first poll).
        if !this
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            *this.signals.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
            this.registered = Some(waker);
        }
        let flags = this.signals.flags.load(Ordering::SeqCst);
        if flags & Signals::EXPIRED != 0 {
            tracing::debug!("connection closed: no request headers within the header timeout");
            return Poll::Ready(Ok(()));
        }
        if flags & Signals::SHUTDOWN != 0 && !this.closing {
            this.closing = true;
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.as_mut().poll(cx)
    }
}

impl<C> Drop for Watched<C> {
    fn drop(&mut self) {
        self.signals.ended.notify_one();
    }
}

/// Watches a connection beside it until it ends: raises [`Signals::EXPIRED`] when it has
/// waited for a request's head longer than `timeout`, and [`Signals::SHUTDOWN`] when
/// `told` turns true (the server shuts down). Holds `told` until then, so that the
/// server's drain (which waits for every receiver of `told` to go) waits for it.
pub(crate) async fn watchdog(
    signals: Arc<Signals>,
    wait: Arc<HeadWait>,
    timeout: Duration,
    mut told: tokio::sync::watch::Receiver<bool>,
) {
    let ended = signals.ended.notified();
    tokio::pin!(ended);
    let mut listening = true;
    if *told.borrow_and_update() {
        signals.raise(Signals::SHUTDOWN);
        listening = false;
    }
    loop {
        tokio::select! {
            biased;
            () = &mut ended => return,
            () = wait.expired(timeout) => {
                signals.raise(Signals::EXPIRED);
                return;
            }
            changed = told.changed(), if listening => match changed {
                Ok(()) if *told.borrow_and_update() => {
                    signals.raise(Signals::SHUTDOWN);
                    listening = false;
                }
                Ok(()) => {}
                // The server is gone without telling: nothing more will come.
                Err(_) => listening = false,
            },
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

    fn call(&self, req: Request<Incoming>) -> Serving {
        self.wait.busy();
        let mut facts = super::facts::Facts::from_peer(self.peer);
        Serving {
            reply: self.stack.answer(req, &mut facts),
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
    use std::io::{Read, Write};

    /// One connection on a loopback port, served by hyper (each request answered after
    /// `slow`), watched with `timeout` and `told`; answers the client's socket and the
    /// connection's task.
    async fn served(
        slow: Duration,
        timeout: Duration,
        told: tokio::sync::watch::Receiver<bool>,
    ) -> (std::net::TcpStream, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = std::net::TcpStream::connect(addr).expect("connect");
        let (stream, _) = listener.accept().await.expect("accept");
        let task = tokio::spawn(async move {
            let wait = HeadWait::new();
            let busy = wait.clone();
            let answer = hyper::service::service_fn(move |_req: Request<Incoming>| {
                busy.busy();
                let done = busy.clone();
                async move {
                    tokio::time::sleep(slow).await;
                    done.waiting();
                    Ok::<_, Infallible>(Response::new(http_body_util::Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), answer);
            let signals = Arc::new(Signals::default());
            tokio::spawn(watchdog(signals.clone(), wait, timeout, told));
            let _ = Watched::new(conn, signals).await;
        });
        (client, task)
    }

    /// What `client` reads until the server closes the connection (within 5 s; off the
    /// runtime's threads).
    async fn read_to_close(mut client: std::net::TcpStream) -> String {
        tokio::task::spawn_blocking(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut got = Vec::new();
            let _ = client.read_to_end(&mut got);
            String::from_utf8_lossy(&got).into_owned()
        })
        .await
        .expect("reader")
    }

    /// Waits for the connection's task to end, and for its watchdog to let go of its
    /// receiver of `tell` (the server's drain is then over).
    async fn drained(task: tokio::task::JoinHandle<()>, tell: &tokio::sync::watch::Sender<bool>) {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the connection ended")
            .expect("task");
        tokio::time::timeout(Duration::from_secs(5), tell.closed())
            .await
            .expect("drained");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn told_to_shut_down_a_connection_finishes_its_request_then_closes() {
        let (tell, told) = tokio::sync::watch::channel(false);
        let (mut client, task) =
            served(Duration::from_millis(300), Duration::from_secs(30), told).await;
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .expect("send");
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The request is in flight: told now, it is still answered, and then the
        // connection closes although the client would keep it alive.
        tell.send_replace(true);
        let got = read_to_close(client).await;
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.ends_with("ok"), "{got}");
        drained(task, &tell).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_closes_at_once_when_told_or_after_the_header_timeout() {
        // Told: closed at once, nothing answered.
        let (tell, told) = tokio::sync::watch::channel(false);
        let (client, task) = served(Duration::ZERO, Duration::from_secs(30), told).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = crate::clock::Instant::now();
        tell.send_replace(true);
        let got = read_to_close(client).await;
        assert_eq!(got, "");
        assert!(started.elapsed() < Duration::from_secs(2));
        drained(task, &tell).await;
        // Not told: a connection that sends half a head is closed after the header
        // timeout, and one that keeps asking is not.
        let (_tell, told) = tokio::sync::watch::channel(false);
        let (mut client, task) =
            served(Duration::ZERO, Duration::from_millis(300), told.clone()).await;
        client.write_all(b"GET / HTTP/1.1\r\n").expect("send");
        let started = crate::clock::Instant::now();
        let got = read_to_close(client).await;
        let waited = started.elapsed();
        assert!(!got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(3), "{waited:?}");
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the connection ended")
            .expect("task");
        let (mut client, task) = served(Duration::ZERO, Duration::from_millis(300), told).await;
        let asking = tokio::task::spawn_blocking(move || {
            client
                .set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            for _ in 0..8 {
                client
                    .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
                    .expect("send");
                let mut buf = [0u8; 512];
                let n = client.read(&mut buf).expect("answer");
                assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        // 8 requests 100 ms apart: 800 ms on a connection with a 300 ms header timeout.
        asking.await.expect("every request answered");
        task.abort();
    }

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
