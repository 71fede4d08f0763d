//! The accept loop behind each listener, with the limits `axum::serve` does not have.
//!
//! `axum::serve` gives hyper no timer, so hyper's header-read timeout never fires: a
//! connection that sends nothing, half a request, or nothing more after a keep-alive
//! response stays open for as long as the client wants, and holds a file descriptor all
//! that time. About a thousand such connections used to exhaust the open-file limit, and then
//! *both* listeners failed every `accept` with "Too many open files", so a flood on the
//! boot network also took down the API. A SIGTERM waited for those connections too.
//!
//! [`serve`] drives hyper's HTTP/1 connection itself and adds, per listener:
//!
//! - a header timeout (hyper's own, given a timer) and an idle keep-alive timeout (ours,
//!   see [`ListenerLimits::keepalive_timeout`]);
//! - a cap on open connections: a connection beyond it is accepted and closed at once, so
//!   the client sees a close instead of hanging in the backlog, and is counted as refused.
//!   With [`connection_caps`] sizing the two caps from the open-file limit, a flood on one
//!   listener can no longer starve the other, nor the database and image files;
//! - accept errors that never end the loop (EMFILE backs off briefly and retries);
//! - a graceful shutdown bounded by a grace period.
//!
//! The timeouts must stay generous on the boot listener: iPXE firmware on a slow or busy
//! boot network (a rack powering on at once, a lossy link, a firmware TCP stack with a
//! small window and slow retransmissions) can take seconds to send a request head, and
//! a timeout it trips means a machine that does not boot.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

/// How often, at most, the same kind of warning is logged (refused connections, accept
/// errors): a flood must not turn into a flood of log lines.
const LOG_EVERY: Duration = Duration::from_secs(5);

/// hyper adds the header timeout to the current time unchecked: keep it far from overflow.
const MAX_HEADER_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// The pause after an accept error that is not about one connection (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM). Retrying at once would spin on the same error; the pending
/// connections wait in the backlog meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The limits of one listener.
#[derive(Debug, Clone)]
pub struct ListenerLimits {
    /// "api" or "boot": the metrics label and log field.
    pub name: &'static str,
    /// A client must send a complete request head within this time, from accept, and
    /// again for each request on a keep-alive connection. Enforced by hyper, whose timer
    /// for a later request starts when the previous response has been handed to the
    /// connection: the idle gap between keep-alive requests counts against it too, so an
    /// idle keep-alive connection is closed after `header_timeout` at the latest, whatever
    /// `keepalive_timeout` says.
    pub header_timeout: Duration,
    /// An idle keep-alive connection (no request in progress, nothing received or sent)
    /// is closed after this time. Also closes a new connection that sends nothing. Only
    /// matters when shorter than `header_timeout` (see there).
    pub keepalive_timeout: Duration,
    /// Open connections at once; beyond it a new connection is accepted and closed at
    /// once, and counted as refused. 0 refuses every connection.
    pub max_connections: usize,
}

/// What [`serve`] reports about one listener. Clones share the same values, so the caller
/// keeps a clone registered (e.g. from a `Family` labelled by listener name).
#[derive(Debug, Clone, Default)]
pub struct ListenerMetrics {
    /// Connections closed at accept because `max_connections` were open.
    pub refused: Counter,
    /// Connections open now.
    pub open: Gauge,
}

/// Serves `router` on `listener` until `shutdown` completes, then shuts down gracefully:
/// it stops accepting at once (the listener is closed, so new connections are refused by
/// the kernel), closes idle connections, lets requests in flight finish, and after
/// `grace` closes whatever is left (e.g. a client that never finishes its request head)
/// and returns.
///
/// Only HTTP/1 (iPXE and the API clients speak nothing else). Accept errors are logged,
/// rate-limited, and never end the loop, so today this always returns `Ok`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    metrics: ListenerMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> io::Result<()> {
    let name = limits.name;
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout.min(MAX_HEADER_TIMEOUT))
        .keep_alive(true);
    let (stop, _) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut refused_log = LogLimiter::default();
    let mut error_log = LogLimiter::default();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                report_panic(name, done);
                continue;
            }
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    // Count first: the client may see the close before this task runs again.
                    metrics.refused.inc();
                    drop(tcp);
                    if let Some(suppressed) = refused_log.ready() {
                        tracing::warn!(
                            listener = name,
                            max_connections = limits.max_connections,
                            suppressed,
                            "connection limit reached: closing new connections at once"
                        );
                    }
                    continue;
                };
                // Scripts and API answers are small writes on keep-alive connections: with
                // Nagle's algorithm on, one could wait for the client's delayed ACK (40 ms
                // on Linux).
                if let Err(e) = tcp.set_nodelay(true) {
                    tracing::debug!(listener = name, %peer, "TCP_NODELAY not set: {e}");
                }
                metrics.open.inc();
                let open = Open {
                    gauge: metrics.open.clone(),
                    _permit: permit,
                };
                connections.spawn(connection(
                    name,
                    tcp,
                    router.clone(),
                    builder.clone(),
                    limits.keepalive_timeout,
                    stop.subscribe(),
                    open,
                ));
            }
            // The client gave up between SYN and accept: nothing to do.
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(listener = name, "accept: {e}");
            }
            Err(e) => {
                if let Some(suppressed) = error_log.ready() {
                    tracing::error!(
                        listener = name,
                        suppressed,
                        "accept failed, retrying in {ACCEPT_BACKOFF:?}: {e}"
                    );
                }
                tokio::select! {
                    biased;
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }

    // Nothing awaits between the shutdown and these two lines: once `shutdown` has
    // completed, new connections are refused.
    drop(listener);
    stop.send_replace(true);
    let open = connections.len();
    tracing::debug!(listener = name, open, "shutting down");
    let drained = tokio::time::timeout(grace, async {
        while let Some(done) = connections.join_next().await {
            report_panic(name, done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            listener = name,
            left = connections.len(),
            "closing connections still open after the {grace:?} grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// Accept errors that concern one connection only (it was reset before we took it), as
/// opposed to the process (EMFILE) or the system (ENFILE, ENOBUFS, ENOMEM).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

fn report_panic(name: &'static str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(listener = name, "connection task panicked: {e}");
    }
}

/// Lets a kind of warning through at most once per [`LOG_EVERY`], counting the rest.
#[derive(Debug, Default)]
struct LogLimiter {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    /// `Some(number suppressed since the last one)` when this one may be logged.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_none_or(|last| now - last >= LOG_EVERY) {
            self.last = Some(now);
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// One open connection: its slot under `max_connections` and its count in the gauge,
/// both given back when the connection task ends or is aborted.
struct Open {
    gauge: Gauge,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// Serves one connection until it closes, hyper's header timeout fires, it is idle for
/// `keepalive_timeout`, or the server shuts down.
///
/// Both the idle watchdog and the shutdown call hyper's `graceful_shutdown`, which closes
/// the connection at once if it is idle (between requests, or before the first byte),
/// and otherwise only turns keep-alive off, so a request in progress always finishes.
async fn connection(
    name: &'static str,
    tcp: TcpStream,
    router: Router,
    builder: http1::Builder,
    keepalive_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _open: Open,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: tcp,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |request: axum::http::Request<Incoming>| {
            let busy = Busy::begin(&activity);
            let router = router.clone();
            async move {
                let response = match router.oneshot(request).await {
                    Ok(response) => response,
                    Err(never) => match never {},
                };
                Ok::<_, Infallible>(response.map(|body| TrackedBody { body, _busy: busy }))
            }
        })
    };
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let stopping = async move {
        let _ = stop.wait_for(|stop| *stop).await;
    };
    let mut stopping = std::pin::pin!(stopping);
    let idle = activity.idle_for(keepalive_timeout);
    let mut idle = std::pin::pin!(idle);
    let mut closing = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    // Header timeouts, resets and malformed requests: the client's business.
                    tracing::debug!(listener = name, "connection closed: {e}");
                }
                return;
            }
            () = &mut stopping, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut idle, if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
        }
    }
}

/// What the idle watchdog of one connection looks at.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    /// Requests whose response hyper has not finished sending (see [`Busy`]).
    busy: AtomicUsize,
    /// When bytes were last read or written, or a response was last finished, in
    /// microseconds after `origin`.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            origin: Instant::now(),
            busy: AtomicUsize::new(0),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_micros(self.last.load(Ordering::Relaxed))
    }

    /// Completes once the connection has had no request in progress and no bytes moving
    /// for `timeout`.
    async fn idle_for(&self, timeout: Duration) {
        loop {
            // Acquire pairs with the Release in `Busy::drop`, which touches first: seeing
            // the request finished means seeing when it finished.
            let idle = self.busy.load(Ordering::Acquire) == 0;
            // When busy, look again later: a request ending touches `last`, so the
            // connection cannot have been idle for `timeout` before then.
            let from = if idle { self.last() } else { Instant::now() };
            let Some(wake) = from.checked_add(timeout) else {
                return std::future::pending().await;
            };
            if idle && Instant::now() >= wake {
                return;
            }
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Marks a request in progress, from the moment hyper has its head to the moment hyper
/// drops the response body (sent completely, or the connection died).
struct Busy(Arc<Activity>);

impl Busy {
    fn begin(activity: &Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::AcqRel);
        Busy(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.busy.fetch_sub(1, Ordering::Release);
    }
}

/// A response body that keeps its request marked [`Busy`] until hyper drops it.
struct TrackedBody {
    body: Body,
    _busy: Busy,
}

impl hyper::body::Body for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket, noting in [`Activity`] every read or write that moved bytes, so that a
/// request head arriving slowly, or a response draining to a slow client, is not idle.
struct Watched {
    inner: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        result
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The open-file limit of the process (`RLIMIT_NOFILE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The soft limit assumed when even reading the limit fails: the usual default.
const DEFAULT_NOFILE: u64 = 1024;

/// Raises the soft RLIMIT_NOFILE to the hard limit (as Go's runtime and nginx's
/// worker_rlimit_nofile do) and returns the result; on failure returns the current limit
/// (and logs why), or 1,024 for both if the limit cannot even be read.
///
/// The soft limit is usually 1,024 for select(2)'s sake, which this process never calls;
/// every connection holds a descriptor, so 1,024 is far too few for a boot storm.
pub fn raise_nofile_limit() -> FileLimit {
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!("cannot raise the open-file limit: {e}");
    }
    match rlimit::Resource::NOFILE.get() {
        Ok((soft, hard)) => FileLimit { soft, hard },
        Err(e) => {
            tracing::warn!("cannot read the open-file limit, assuming {DEFAULT_NOFILE}: {e}");
            FileLimit {
                soft: DEFAULT_NOFILE,
                hard: DEFAULT_NOFILE,
            }
        }
    }
}

/// Descriptors kept for everything but client connections: `max(64, limit / 8)`, but at
/// most half of `limit`.
fn reserve(limit: u64) -> u64 {
    (limit / 8).max(64).min(limit / 2)
}

/// Splits the file budget between the two listeners, keeping a reserve for the database,
/// image files, outgoing connections and logs. Returns `(api, boot)` connection caps.
///
/// The rule, with `limit` the soft open-file limit:
///
/// 1. reserve = max(64, limit / 8), at most limit / 2; budget = limit − reserve.
/// 2. What each listener wants: its request, or when the request is 0 (automatic): for
///    the API min(1,024, budget / 8) but at least 16 — a few operators and scripts; for
///    the boot listener the whole budget — it faces every machine that powers on.
/// 3. If both wants fit in the budget, the API gets its want and the boot listener its
///    want (automatic: the rest of the budget). Otherwise the API is guaranteed
///    ⌊budget / 2⌋ and the boot listener the other half: a listener wanting less than its
///    half gets its want and the other gets what remains, up to its want; if both want
///    more, each gets its half.
///
/// So api + boot + reserve ≤ limit always, an explicit request is never raised (only
/// clamped down: the caller compares and logs), and both caps are at least 1 once
/// limit ≥ 3. For a limit of 1,024: reserve 128, api 112, boot 784; for 65,536 and more:
/// api 1,024, boot the rest of 7/8 of the limit.
pub fn connection_caps(limit: u64, api_requested: usize, boot_requested: usize) -> (usize, usize) {
    let budget = limit - reserve(limit);
    let api_half = budget / 2;
    let boot_half = budget - api_half;
    let want = |requested: usize, automatic: u64| match requested {
        0 => automatic,
        n => u64::try_from(n).unwrap_or(u64::MAX),
    };
    let api_want = want(api_requested, (budget / 8).clamp(16, 1024));
    let boot_want = want(boot_requested, budget);
    let api = api_want.min(budget - boot_want.min(boot_half));
    let boot = boot_want.min(budget - api);
    let cap = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
    (cap(api), cap(boot))
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::routing::get;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::sync::{Notify, oneshot};
    use tokio::task::JoinHandle;

    const DEADLINE: Duration = Duration::from_secs(5);
    const LONG: Duration = Duration::from_secs(60);
    const SHORT: Duration = Duration::from_millis(200);

    /// `/` answers "ok"; `/slow` notifies `entered`, then waits for `release`.
    #[derive(Clone, Default)]
    struct Slow {
        entered: Arc<Notify>,
        release: Arc<Notify>,
    }

    fn router(slow: &Slow) -> Router {
        let slow = slow.clone();
        Router::new().route("/", get(|| async { "ok" })).route(
            "/slow",
            get(move || async move {
                slow.entered.notify_one();
                slow.release.notified().await;
                "done"
            }),
        )
    }

    fn limits(name: &'static str, header: Duration, keepalive: Duration) -> ListenerLimits {
        ListenerLimits {
            name,
            header_timeout: header,
            keepalive_timeout: keepalive,
            max_connections: 100,
        }
    }

    struct Server {
        addr: std::net::SocketAddr,
        metrics: ListenerMetrics,
        /// Sending (or dropping) starts the shutdown.
        stop: Option<oneshot::Sender<()>>,
        /// Fires once `serve` has seen the shutdown (and so closed its listener).
        stopped: oneshot::Receiver<()>,
        task: JoinHandle<io::Result<()>>,
    }

    impl Server {
        async fn start(router: Router, limits: ListenerLimits, grace: Duration) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let metrics = ListenerMetrics::default();
            let (stop, stop_rx) = oneshot::channel();
            let (stopped_tx, stopped) = oneshot::channel();
            let shutdown = async move {
                let _ = stop_rx.await;
                let _ = stopped_tx.send(());
            };
            let task = tokio::spawn(serve(
                listener,
                router,
                limits,
                metrics.clone(),
                shutdown,
                grace,
            ));
            Server {
                addr,
                metrics,
                stop: Some(stop),
                stopped,
                task,
            }
        }

        /// Starts the shutdown and waits until `serve` has stopped accepting.
        async fn shut_down(&mut self) {
            let _ = self.stop.take().unwrap().send(());
            tokio::time::timeout(DEADLINE, &mut self.stopped)
                .await
                .expect("serve sees the shutdown")
                .unwrap();
        }

        async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.addr).await.unwrap()
        }
    }

    /// Reads until the server closes the connection (EOF or reset) and returns how long
    /// that took; panics after [`DEADLINE`].
    async fn wait_closed(stream: &mut TcpStream) -> Duration {
        let start = Instant::now();
        let mut buf = [0u8; 1024];
        tokio::time::timeout(DEADLINE, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server closes the connection");
        start.elapsed()
    }

    /// Reads one response (status line, headers, Content-Length body).
    async fn read_response<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> (u16, String, String) {
        tokio::time::timeout(DEADLINE, async {
            let mut head = String::new();
            let mut length = 0;
            loop {
                let mut line = String::new();
                assert_ne!(reader.read_line(&mut line).await.unwrap(), 0, "EOF in head");
                if line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).await.unwrap();
            let status = head[9..12].parse().unwrap();
            (status, head, String::from_utf8(body).unwrap())
        })
        .await
        .expect("a response")
    }

    async fn get_once(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let (status, _, body) = read_response(&mut BufReader::new(stream)).await;
        (status, body)
    }

    #[tokio::test]
    async fn regression_idle_connection_stays_open_forever() {
        let server =
            Server::start(router(&Slow::default()), limits("boot", SHORT, LONG), LONG).await;
        let mut stream = server.connect().await;
        let elapsed = wait_closed(&mut stream).await;
        assert!(
            elapsed >= SHORT,
            "closed by the header timeout, not before: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn regression_half_sent_request_stays_open_forever() {
        let server =
            Server::start(router(&Slow::default()), limits("boot", SHORT, LONG), LONG).await;
        let mut stream = server.connect().await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let elapsed = wait_closed(&mut stream).await;
        assert!(
            elapsed >= SHORT,
            "closed by the header timeout, not before: {elapsed:?}"
        );
    }

    /// One request/response on a keep-alive connection, then nothing.
    async fn idle_after_one_request(header: Duration, keepalive: Duration) -> Duration {
        let server = Server::start(
            router(&Slow::default()),
            limits("boot", header, keepalive),
            LONG,
        )
        .await;
        let stream = server.connect().await;
        let mut stream = BufReader::new(stream);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (status, _, body) = read_response(&mut stream).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
        wait_closed(stream.get_mut()).await
    }

    #[tokio::test]
    async fn regression_idle_keepalive_connection_stays_open_forever() {
        // A long header timeout: only our keep-alive watchdog can close it.
        let elapsed = idle_after_one_request(LONG, SHORT).await;
        assert!(
            elapsed >= SHORT / 2,
            "closed by the keep-alive timeout: {elapsed:?}"
        );
    }

    /// What this module relies on in hyper 1.12: its header timer restarts when a
    /// keep-alive connection goes idle, so the idle gap counts against it.
    #[tokio::test]
    async fn hyper_header_timeout_covers_the_keepalive_idle_gap() {
        let elapsed = idle_after_one_request(SHORT, LONG).await;
        assert!(
            elapsed >= SHORT / 2,
            "closed by the header timeout: {elapsed:?}"
        );
    }

    #[tokio::test]
    async fn keepalive_timeout_spares_a_slow_request() {
        let slow = Slow::default();
        let server = Server::start(router(&slow), limits("boot", LONG, SHORT), LONG).await;
        let mut busy = BufReader::new(server.connect().await);
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, slow.entered.notified())
            .await
            .expect("/slow is in flight");
        // Once a connection opened now is closed as idle, the slow request has been
        // running for longer than the keep-alive timeout.
        wait_closed(&mut server.connect().await).await;

        slow.release.notify_one();
        let (status, head, body) = read_response(&mut busy).await;
        assert_eq!((status, body.as_str()), (200, "done"));
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        busy.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut busy).await.0, 200);
    }

    #[tokio::test]
    async fn keepalive_timeout_spares_a_request_head_sent_slowly() {
        let keepalive = Duration::from_millis(300);
        let server = Server::start(
            router(&Slow::default()),
            limits("boot", LONG, keepalive),
            LONG,
        )
        .await;
        // A clock: its idle connections close 100 ms after they open.
        let tick = Duration::from_millis(100);
        let clock =
            Server::start(router(&Slow::default()), limits("clock", LONG, tick), LONG).await;

        let mut stream = BufReader::new(server.connect().await);
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        // The next head arrives over 400 ms, a piece every 100 ms: more than the
        // keep-alive timeout in all, but never idle that long.
        for piece in [
            "GET / HTTP/1.1\r\n",
            "Host: x\r\n",
            "Accept: */*\r\n",
            "\r\n",
        ] {
            assert!(wait_closed(&mut clock.connect().await).await >= tick);
            stream.write_all(piece.as_bytes()).await.unwrap();
        }
        let (status, _, body) = read_response(&mut stream).await;
        assert_eq!((status, body.as_str()), (200, "ok"));
    }

    #[tokio::test]
    async fn regression_flood_exhausts_both_listeners() {
        let slow = Slow::default();
        let mut boot_limits = limits("boot", LONG, LONG);
        boot_limits.max_connections = 20;
        let boot = Server::start(router(&slow), boot_limits, LONG).await;
        let api = Server::start(router(&slow), limits("api", LONG, LONG), LONG).await;

        let mut flood = Vec::new();
        for _ in 0..40 {
            flood.push(boot.connect().await);
        }
        // Each connection waits for the server to close it, or for `check` to hand it back.
        let (check, checking) = watch::channel(false);
        let mut waits = JoinSet::new();
        for mut stream in flood {
            let mut checking = checking.clone();
            waits.spawn(async move {
                let mut byte = [0u8; 1];
                tokio::select! {
                    read = stream.read(&mut byte) => {
                        assert!(matches!(read, Ok(0) | Err(_)), "nothing is sent unasked");
                        None
                    }
                    _ = checking.wait_for(|check| *check) => Some(stream),
                }
            });
        }
        // The 20 beyond the cap are closed at once, and counted.
        for _ in 0..20 {
            let closed = tokio::time::timeout(DEADLINE, waits.join_next())
                .await
                .expect("20 connections are closed at once")
                .unwrap()
                .unwrap();
            assert!(closed.is_none());
        }
        assert_eq!(boot.metrics.refused.get(), 20);
        assert_eq!(boot.metrics.open.get(), 20);

        // The API still answers.
        assert_eq!(get_once(api.addr, "/").await, (200, "ok".into()));
        assert_eq!(api.metrics.refused.get(), 0);

        // The 20 within the cap are still open, and are served.
        check.send_replace(true);
        let mut open = Vec::new();
        while let Some(done) = waits.join_next().await {
            open.push(done.unwrap().expect("still open"));
        }
        assert_eq!(open.len(), 20);
        for stream in open {
            let mut stream = BufReader::new(stream);
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            assert_eq!(read_response(&mut stream).await.0, 200);
        }
        assert_eq!(boot.metrics.refused.get(), 20);
    }

    #[tokio::test]
    async fn regression_sigterm_waits_for_half_sent_request() {
        let grace = Duration::from_millis(300);
        let mut server =
            Server::start(router(&Slow::default()), limits("boot", LONG, LONG), grace).await;
        let mut stream = server.connect().await;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        // Wait until the server holds the connection.
        tokio::time::timeout(DEADLINE, async {
            while server.metrics.open.get() == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("connection accepted");

        let start = Instant::now();
        server.shut_down().await;
        tokio::time::timeout(DEADLINE, &mut server.task)
            .await
            .expect("serve returns after the grace period")
            .unwrap()
            .unwrap();
        let elapsed = start.elapsed();
        assert!(
            elapsed >= grace,
            "the half-sent request had its grace: {elapsed:?}"
        );
        assert_eq!(server.metrics.open.get(), 0);
        wait_closed(&mut stream).await;
    }

    #[tokio::test]
    async fn graceful_shutdown_finishes_requests_in_flight() {
        let slow = Slow::default();
        let mut server = Server::start(router(&slow), limits("boot", LONG, LONG), DEADLINE).await;

        // An idle keep-alive connection, and a request in flight.
        let mut idle = BufReader::new(server.connect().await);
        idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut idle).await.0, 200);
        let mut busy = BufReader::new(server.connect().await);
        busy.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(DEADLINE, slow.entered.notified())
            .await
            .expect("/slow is in flight");

        server.shut_down().await;
        // New connections are refused, the idle one is closed at once.
        assert!(TcpStream::connect(server.addr).await.is_err());
        wait_closed(idle.get_mut()).await;
        // Let the request in flight run on well after the shutdown started.
        let tick = Duration::from_millis(100);
        let clock =
            Server::start(router(&Slow::default()), limits("clock", LONG, tick), LONG).await;
        assert!(wait_closed(&mut clock.connect().await).await >= tick);
        assert!(!server.task.is_finished());

        slow.release.notify_one();
        let (status, head, body) = read_response(&mut busy).await;
        assert_eq!((status, body.as_str()), (200, "done"));
        assert!(
            head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        wait_closed(busy.get_mut()).await;
        tokio::time::timeout(DEADLINE, server.task)
            .await
            .expect("serve returns once the request is done")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn keepalive_client_sends_several_requests_on_one_connection() {
        let server = Server::start(
            router(&Slow::default()),
            limits("boot", SHORT * 5, SHORT * 5),
            LONG,
        )
        .await;
        let mut stream = BufReader::new(server.connect().await);
        for _ in 0..3 {
            stream
                .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap();
            let (status, head, body) = read_response(&mut stream).await;
            assert_eq!((status, body.as_str()), (200, "ok"));
            assert!(
                !head.to_ascii_lowercase().contains("connection: close"),
                "{head}"
            );
        }
        // Two pipelined requests in one write.
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_response(&mut stream).await.0, 200);
        assert_eq!(read_response(&mut stream).await.0, 200);
        assert_eq!(server.metrics.open.get(), 1);
    }

    #[tokio::test]
    async fn reqwest_client_reuses_its_connection() {
        let server = Server::start(router(&Slow::default()), limits("api", LONG, LONG), LONG).await;
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let response = client
                .get(format!("http://{}/", server.addr))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            assert_eq!(response.text().await.unwrap(), "ok");
        }
        assert_eq!(server.metrics.open.get(), 1, "one pooled connection");
    }

    #[test]
    fn caps_at_common_limits() {
        assert_eq!(connection_caps(1024, 0, 0), (112, 784));
        assert_eq!(connection_caps(4096, 0, 0), (448, 3136));
        assert_eq!(connection_caps(65_536, 0, 0), (1024, 56_320));
        assert_eq!(connection_caps(1 << 20, 0, 0), (1024, 916_480));
        // Explicit requests that fit are granted as they are.
        assert_eq!(connection_caps(1024, 800, 50), (800, 50));
        assert_eq!(connection_caps(1024, 10, 0), (10, 886));
        // Too much: each keeps its half of the 896.
        assert_eq!(connection_caps(1024, 8000, 8000), (448, 448));
        assert_eq!(connection_caps(1024, 8000, 0), (448, 448));
        assert_eq!(connection_caps(1024, 0, 8000), (112, 784));
    }

    #[test]
    fn caps_never_exceed_the_budget() {
        let requests = [
            0,
            1,
            2,
            15,
            16,
            17,
            100,
            500,
            1000,
            1024,
            5000,
            100_000,
            usize::MAX,
        ];
        let limits =
            (0..20_000u64).chain([65_535, 65_536, 524_288, 1 << 20, u64::MAX / 2, u64::MAX]);
        let mut previous_auto = (0, 0);
        for limit in limits {
            let documented_reserve = (limit / 8).max(64).min(limit / 2);
            let budget = limit - documented_reserve;
            for api_requested in requests {
                for boot_requested in requests {
                    let (api, boot) = connection_caps(limit, api_requested, boot_requested);
                    let context = format!(
                        "limit {limit}, requested ({api_requested}, {boot_requested}) -> ({api}, {boot})"
                    );
                    let (a, b) = (api as u64, boot as u64);
                    assert!(
                        a.checked_add(b).is_some_and(|sum| sum <= budget),
                        "{context}"
                    );
                    if limit >= 128 {
                        assert!(a + b + (limit / 8).max(64) <= limit, "{context}");
                    }
                    if limit >= 3 {
                        assert!(api >= 1 && boot >= 1, "{context}");
                    }
                    if api_requested > 0 {
                        assert!(api <= api_requested, "{context}");
                    }
                    if boot_requested > 0 {
                        assert!(boot <= boot_requested, "{context}");
                    }
                    // Requests that fit are granted.
                    let (ra, rb) = (api_requested as u64, boot_requested as u64);
                    if ra > 0 && rb > 0 && ra.checked_add(rb).is_some_and(|sum| sum <= budget) {
                        assert_eq!((a, b), (ra, rb), "{context}");
                    }
                    // Each listener keeps its half of the budget when it wants it.
                    if ra == 0 {
                        assert!(a >= (budget / 2).min(16), "{context}");
                    }
                    if ra >= budget / 2 {
                        assert!(a >= budget / 2, "{context}");
                    }
                    if rb == 0 || rb >= budget - budget / 2 {
                        assert!(b >= budget - budget / 2, "{context}");
                    }
                }
            }
            let (api, boot) = connection_caps(limit, 0, 0);
            let (a, b) = (api as u64, boot as u64);
            assert_eq!(
                a + b,
                budget,
                "automatic caps use the whole budget at {limit}"
            );
            assert!(api <= 1024, "limit {limit}");
            if budget >= 32 {
                assert!(api >= 16 && boot >= api, "limit {limit}: ({api}, {boot})");
            }
            if budget >= 128 {
                assert!(boot >= 7 * api, "limit {limit}: ({api}, {boot})");
            }
            assert!(
                api >= previous_auto.0 && boot >= previous_auto.1,
                "automatic caps never shrink as the limit grows: {limit}"
            );
            previous_auto = (api, boot);
        }
    }

    #[test]
    fn raising_the_file_limit_reaches_the_hard_limit() {
        let limit = raise_nofile_limit();
        assert!(limit.soft <= limit.hard);
        assert_eq!(
            rlimit::Resource::NOFILE.get().unwrap(),
            (limit.soft, limit.hard)
        );
        // Linux caps the soft limit at the hard one: raising it to the hard limit always
        // succeeds for an unprivileged process.
        if cfg!(target_os = "linux") {
            assert_eq!(limit.soft, limit.hard);
        }
    }
}
