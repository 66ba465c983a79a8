//! A small HTTP/1.1 responder over `std::net`, built for a recorder's few
//! read-only endpoints and for hostile or broken clients: one request per
//! connection (`Connection: close`), no bodies read beyond a little, and a
//! bound on everything a client could make it hold.
//!
//! - The accept thread reads request heads itself, every socket
//!   non-blocking under one `poll`, so a slow sender costs a buffer, never
//!   a thread. A head must arrive whole within [`HEAD_DEADLINE`] and fit in
//!   [`MAX_HEAD`] bytes. At most `QUEUE` connections wait; beyond that, and
//!   for heads too slow or too large, the accept thread answers itself
//!   (503, 408, 431: small enough for the socket buffer, so it never waits).
//! - A fixed pool of worker threads answers whole requests. An answer must
//!   be taken within [`WRITE_DEADLINE`]: slow readers are cut off, and
//!   shutdown waits for no one longer than that.
//! - Accept errors (out of file descriptors) are logged, rate-limited, and
//!   waited out; the server goes on when descriptors are free again.
//! - On a loopback address, a `Host` that is neither an IP address nor
//!   `localhost` is refused (DNS rebinding), and so is a `POST` from a web
//!   page of another origin.
//!
//! tiny_http was used first and failed exactly these cases (its accept
//! thread panics on EMFILE, a thread per connection without a bound, no
//! timeouts, unlimited header size).

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crossbeam_channel::bounded;

use crate::stats::RateLimit;

/// The largest request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;
/// How long a client may take to send its request head.
pub const HEAD_DEADLINE: Duration = Duration::from_secs(5);
/// How long a client may take to read its answer.
pub const WRITE_DEADLINE: Duration = Duration::from_secs(10);
/// Connections waiting for a worker before new ones are turned away (each
/// costs a descriptor; the deadlines empty the queue).
const QUEUE: usize = 128;
/// The most of a request body read (and thrown away) before answering.
const MAX_BODY: usize = 64 * 1024;

/// A parsed request: what the handlers need.
#[derive(Debug)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
}

/// An answer.
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub headers: Vec<(&'static str, String)>,
    pub body: Body,
    /// Kept until the answer is written (a count of answers in flight).
    pub hold: Option<Box<dyn Send>>,
}

/// An answer's body: made for it, or shared (the preview JPEG).
pub enum Body {
    Owned(Vec<u8>),
    Shared(std::sync::Arc<Vec<u8>>),
}

impl Body {
    fn bytes(&self) -> &[u8] {
        match self {
            Body::Owned(v) => v,
            Body::Shared(v) => v,
        }
    }
}

impl Reply {
    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            headers: Vec::new(),
            body: Body::Owned(body.into().into_bytes()),
            hold: None,
        }
    }

    pub fn with_header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        421 => "Misdirected Request",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// A connection whose request head is still arriving (read by the accept
/// thread, so slow senders never hold a worker).
struct Pending {
    stream: TcpStream,
    head: Vec<u8>,
    since: Instant,
}

/// A connection with its whole request head, for a worker.
struct Ready {
    stream: TcpStream,
    head: Vec<u8>,
    /// Where the head ends (what follows is the start of a body).
    head_len: usize,
}

/// Accepts until `stop`, reading request heads itself and handing whole
/// requests to `workers` threads that answer with `handle`. Returns once
/// every worker has finished.
pub fn serve(
    listener: &TcpListener,
    pools: Pools<'_>,
    stop: &AtomicBool,
    handle: &(dyn Fn(&Request<'_>) -> Reply + Sync),
) {
    lower_priority();
    let loopback = listener.local_addr().is_ok_and(|a| a.ip().is_loopback());
    let (fast_tx, fast_rx) = bounded::<Ready>(QUEUE);
    let (slow_tx, slow_rx) = bounded::<Ready>(QUEUE);
    std::thread::scope(|scope| {
        let sets = [
            ("http", pools.fast, &fast_rx),
            ("http-slow", pools.slow, &slow_rx),
        ];
        for (name, workers, rx) in sets {
            for k in 0..workers {
                let rx = rx.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("{name}-{k}"))
                    .spawn_scoped(scope, move || {
                        lower_priority();
                        for ready in rx {
                            // Stopping: what waits is not answered (the
                            // recorder's stop never waits for clients).
                            if !stop.load(Relaxed) {
                                answer(ready, loopback, handle);
                            }
                        }
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "http: cannot start a worker thread");
                }
            }
        }
        drop((fast_rx, slow_rx));
        accept(listener, [&fast_tx, &slow_tx], pools.is_slow, stop);
        // Dropping the senders ends the workers once their queues are empty.
        drop((fast_tx, slow_tx));
    });
}

/// The worker threads: answers that may take long (a large preview to a
/// slow reader, a snapshot waited for) have their own, so the others
/// (`/healthz`) never wait behind them.
#[derive(Clone, Copy)]
pub struct Pools<'a> {
    pub fast: usize,
    pub slow: usize,
    /// Whether a request path goes to the slow pool.
    pub is_slow: &'a (dyn Fn(&str) -> bool + Sync),
}

/// The HTTP threads yield to capture and the encoders when the CPU is
/// short (a nice value of 10; recording comes first).
fn lower_priority() {
    // SAFETY: setpriority on this thread's own id has no preconditions; a
    // failure leaves the priority as it was.
    unsafe {
        let tid = libc::gettid();
        let _ = libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, 10);
    }
}

/// Answers a short error at once and closes (the accept thread's own
/// answers: small enough for the socket buffer, so it never waits).
fn refuse(stream: &TcpStream, status: u16) {
    let message = reason(status);
    let reply = format!(
        "HTTP/1.1 {status} {message}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{message}\n",
        message.len() + 1
    );
    let _ = stream.set_nonblocking(true);
    let _ = (&*stream).write_all(reply.as_bytes());
    let _ = stream.shutdown(Shutdown::Write);
    // What the client sent is read, so closing does not reset the
    // connection under the answer.
    let _ = (&*stream).read(&mut [0u8; 4096]);
}

/// The accept loop: accepts, reads request heads as they arrive (all
/// sockets non-blocking, one `poll`), and queues whole requests.
fn accept(
    listener: &TcpListener,
    [fast, slow]: [&crossbeam_channel::Sender<Ready>; 2],
    is_slow: &(dyn Fn(&str) -> bool + Sync),
    stop: &AtomicBool,
) {
    use rustix::event::{poll, PollFd, PollFlags};
    let errors = RateLimit::default();
    let started = Instant::now();
    let _ = listener.set_nonblocking(true);
    let mut pending: Vec<Pending> = Vec::new();
    let tick = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 100_000_000,
    };
    while !stop.load(Relaxed) {
        let mut fds = Vec::with_capacity(pending.len() + 1);
        fds.push(PollFd::new(listener, PollFlags::IN));
        fds.extend(
            pending
                .iter()
                .map(|p| PollFd::new(&p.stream, PollFlags::IN)),
        );
        if poll(&mut fds, Some(&tick)).is_err() {
            continue;
        }
        let readable: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        // Heads that arrived (back to front: finished ones are removed).
        for i in (0..pending.len()).rev() {
            if !readable[i + 1] {
                continue;
            }
            let p = &mut pending[i];
            let mut chunk = [0u8; 4096];
            match (&p.stream).read(&mut chunk) {
                Ok(0) => {
                    pending.swap_remove(i);
                }
                Ok(n) => {
                    let from = p.head.len().saturating_sub(3);
                    p.head.extend_from_slice(&chunk[..n]);
                    if let Some(head_len) = head_end(&p.head, from) {
                        let p = pending.swap_remove(i);
                        let path = request_path(&p.head[..head_len]);
                        let tx = if is_slow(path) { slow } else { fast };
                        let ready = Ready {
                            stream: p.stream,
                            head: p.head,
                            head_len,
                        };
                        if let Err(e) = tx.try_send(ready) {
                            refuse(&e.into_inner().stream, 503);
                        }
                    } else if p.head.len() >= MAX_HEAD {
                        refuse(&pending.swap_remove(i).stream, 431);
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => {
                    pending.swap_remove(i);
                }
            }
        }
        // Heads that take too long.
        pending.retain(|p| {
            let late = p.since.elapsed() > HEAD_DEADLINE;
            if late {
                refuse(&p.stream, 408);
            }
            !late
        });
        if !readable[0] {
            continue;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => {
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.set_nodelay(true);
                    if pending.len() >= QUEUE {
                        // Full of connections that send nothing: the one
                        // idle longest goes, so a new client is always read
                        // (a real one sends its head at once).
                        if let Some(oldest) = (0..pending.len()).min_by_key(|&i| pending[i].since) {
                            refuse(&pending.swap_remove(oldest).stream, 408);
                        }
                    }
                    pending.push(Pending {
                        stream,
                        head: Vec::new(),
                        since: Instant::now(),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    if let Some(suppressed) = errors.allow(started.elapsed().as_millis() as u64) {
                        tracing::warn!(error = %e, similar_suppressed = suppressed, "http: cannot accept a connection; waiting");
                    }
                    // Out of descriptors: wait for some to be freed, never spin.
                    std::thread::sleep(Duration::from_millis(100));
                    break;
                }
            }
        }
    }
}

/// Where the head ends (after CRLF CRLF, or a bare LF LF as some clients
/// send), searching from `from`.
fn head_end(head: &[u8], from: usize) -> Option<usize> {
    let from = from.min(head.len());
    let crlf = head[from..]
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| from + i + 4);
    let lf = head[from..]
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| from + i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The path of a request head's first line (for routing; `""` if none).
fn request_path(head: &[u8]) -> &str {
    let line = head.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let target = line.split(|&b| b == b' ').nth(1).unwrap_or(&[]);
    std::str::from_utf8(target).unwrap_or("")
}

/// Whether a `Host` (or an `Origin`'s host) names this machine by address
/// or as `localhost`.
fn local_name(host: &str) -> bool {
    let host = host.trim();
    let name = if let Some(v6) = host.strip_prefix('[') {
        match v6.split_once(']') {
            // Only a port may follow the address.
            Some((addr, rest))
                if rest.is_empty()
                    || rest
                        .strip_prefix(':')
                        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())) =>
            {
                addr
            }
            _ => return false,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

/// Answers one request whose head arrived whole.
fn answer(ready: Ready, loopback: bool, handle: &(dyn Fn(&Request<'_>) -> Reply + Sync)) {
    let Ready {
        mut stream,
        head,
        head_len,
    } = ready;
    let _ = stream.set_nonblocking(false);
    match parse(&head[..head_len], loopback) {
        Ok((request, body_len)) => {
            discard_body(&mut stream, &head[head_len..], body_len);
            let reply = handle(&request);
            write_reply(&mut stream, &reply, request.method == "HEAD");
        }
        Err(status) => {
            let reply = Reply::text(status, format!("{}\n", reason(status)));
            write_reply(&mut stream, &reply, false)
        }
    }
}

/// Parses the request head: the request and its body's length, or the
/// status to answer.
fn parse(head: &[u8], loopback: bool) -> Result<(Request<'_>, usize), u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let mut lines = text.split('\n').map(|l| l.strip_suffix('\r').unwrap_or(l));
    let mut parts = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(400);
    };
    if !matches!(version, "HTTP/1.0" | "HTTP/1.1") || method.is_empty() {
        return Err(400);
    }
    // Origin form ("/metrics?x") or absolute form ("http://host/metrics").
    let target = match target.strip_prefix("http://") {
        Some(rest) => rest.find('/').map_or("/", |i| &rest[i..]),
        None => target,
    };
    if !target.starts_with('/') {
        return Err(400);
    }
    let path = target.split(['?', '#']).next().unwrap_or("/");
    let (mut host, mut origin, mut body_len) = (None, None, 0usize);
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(400u16)?;
        // No whitespace in a field name (RFC 9112: such a field is refused,
        // not read as another).
        if name.is_empty() || name.bytes().any(|b| b.is_ascii_whitespace()) {
            return Err(400);
        }
        let value = value.trim();
        if name.eq_ignore_ascii_case("host") {
            if host.is_some() {
                return Err(400);
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            origin = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            body_len = value.parse().map_err(|_| 400u16)?;
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            // No chunked bodies here: nothing takes a body.
            return Err(400);
        }
    }
    if loopback && host.is_some_and(|h| !local_name(h)) {
        return Err(421);
    }
    if method != "GET" && method != "HEAD" {
        // A page of another site may send a POST (a snapshot) to a local
        // port: only a request from no page, or this origin, is taken.
        // `Origin: null` comes from sandboxed frames and data: pages.
        let origin_host = origin.map(|o| o.split("://").nth(1).unwrap_or(o));
        if origin_host.is_some_and(|o| o == "null" || Some(o) != host) {
            return Err(403);
        }
    }
    Ok((Request { method, path }, body_len))
}

/// Reads and drops up to [`MAX_BODY`] of a request body (`already` came
/// with the head), so closing does not reset the connection under the
/// answer.
fn discard_body(stream: &mut TcpStream, already: &[u8], body_len: usize) {
    // Only what has arrived: no endpoint takes a body, and waiting for one
    // would let a client hold a thread.
    let mut left = body_len.min(MAX_BODY).saturating_sub(already.len());
    let mut scratch = [0u8; 4096];
    let _ = stream.set_nonblocking(true);
    while left > 0 {
        match stream.read(&mut scratch[..left.min(4096)]) {
            Ok(0) | Err(_) => break,
            Ok(n) => left -= n,
        }
    }
    let _ = stream.set_nonblocking(false);
}

/// Writes the answer, giving up after [`WRITE_DEADLINE`] in all.
#[expect(
    clippy::disallowed_methods,
    reason = "partial writes are the point: each call is bounded by the deadline left"
)]
fn write_reply(stream: &mut TcpStream, reply: &Reply, head_only: bool) {
    let body = reply.body.bytes();
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reason(reply.status),
        reply.content_type,
        body.len()
    );
    for (name, value) in &reply.headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let started = Instant::now();
    let mut send = |mut bytes: &[u8]| -> bool {
        while !bytes.is_empty() {
            let left = WRITE_DEADLINE.saturating_sub(started.elapsed());
            if left.is_zero() {
                return false;
            }
            let _ = stream.set_write_timeout(Some(left.min(Duration::from_secs(1))));
            match stream.write(&bytes[..bytes.len().min(64 * 1024)]) {
                Ok(0) => return false,
                Ok(n) => bytes = &bytes[n..],
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(_) => return false,
            }
        }
        true
    };
    if send(head.as_bytes()) && !head_only {
        send(body);
    }
    let _ = stream.shutdown(Shutdown::Write);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_heads_parse_or_name_the_problem() {
        let ok = parse(
            b"GET /metrics?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8090\r\n\r\n",
            true,
        )
        .unwrap();
        assert_eq!((ok.0.method, ok.0.path, ok.1), ("GET", "/metrics", 0));
        let abs = parse(b"GET http://127.0.0.1:8090/healthz HTTP/1.1\r\n\r\n", true).unwrap();
        assert_eq!(abs.0.path, "/healthz");
        assert_eq!(parse(b"GET /\xff HTTP/1.1\r\n\r\n", true).unwrap_err(), 400);
        assert_eq!(
            parse(b"GET metrics HTTP/1.1\r\n\r\n", true).unwrap_err(),
            400
        );
        assert_eq!(parse(b"\x16\x03\x01 hello\r\n\r\n", true).unwrap_err(), 400);
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nbroken\r\n\r\n", true).unwrap_err(),
            400
        );
        // DNS rebinding: a name that is not this machine's, on loopback.
        let rebound = b"GET /snapshot.jpg HTTP/1.1\r\nHost: evil.example:8090\r\n\r\n";
        assert_eq!(parse(rebound, true).unwrap_err(), 421);
        assert!(parse(rebound, false).is_ok());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: [::1]:8090\r\n\r\n", true).is_ok());
        assert!(parse(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", true).is_ok());
        // A POST from another site's page.
        let csrf = b"POST /snapshot HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nOrigin: http://evil.example\r\n\r\n";
        assert_eq!(parse(csrf, true).unwrap_err(), 403);
        let same = b"POST /snapshot HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nOrigin: http://127.0.0.1:8090\r\n\r\n";
        assert!(parse(same, true).is_ok());
        let null = b"POST /snapshot HTTP/1.1\r\nHost: 127.0.0.1:8090\r\nOrigin: null\r\n\r\n";
        assert_eq!(parse(null, true).unwrap_err(), 403);
        // Two Host fields, or a name with a space: refused, not guessed at.
        let two = b"GET / HTTP/1.1\r\nHost: evil.example\r\nHost: 127.0.0.1\r\n\r\n";
        assert_eq!(parse(two, true).unwrap_err(), 400);
        let spaced = b"GET / HTTP/1.1\r\nHost : evil.example\r\n\r\n";
        assert_eq!(parse(spaced, true).unwrap_err(), 400);
        let glued = b"GET / HTTP/1.1\r\nHost: [::1]evil.example\r\n\r\n";
        assert_eq!(parse(glued, true).unwrap_err(), 421);
        assert_eq!(parse(b"GET / HTTP/1.9\r\n\r\n", true).unwrap_err(), 400);
        // Bare line feeds end a head too.
        let bare = b"GET /healthz HTTP/1.1\nHost: localhost\n\n";
        assert_eq!(head_end(bare, 0), Some(bare.len()));
        assert_eq!(parse(bare, true).unwrap().0.path, "/healthz");
        assert_eq!(
            request_path(b"GET /snapshot.jpg HTTP/1.1\r\n"),
            "/snapshot.jpg"
        );
    }
}
