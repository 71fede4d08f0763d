//! Images served from `[deploy] http_root` on the boot listener: `GET` and `HEAD` of
//! `/<node uuid>/<label>`, the path of Ironic's `[deploy] http_url`, where the image cache
//! hardlinks each node's kernel and ramdisk.
//!
//! **What is served.** Only a path that is, exactly as the client sent it (before any
//! percent-decoding), `/` + a canonical UUID (lowercase, hyphenated) + `/` + a label of 1 to
//! 64 characters from `[A-Za-z0-9_.-]` that does not start with `.` (so no `..`, no hidden
//! temporary file of the cache or the mirror). `%`, `\`, `;`, a second `/`, NUL or any byte
//! outside that set cannot be part of a served path, so no encoding of a `..` or a `/` can
//! name another file. The query string is ignored. Anything else is not handled here (see
//! [`image_path`]).
//!
//! **No symlinks.** The node's directory is opened with `O_NOFOLLOW | O_DIRECTORY` and the
//! file inside it with `openat(2)` and `O_NOFOLLOW`: a symlink at either level is refused
//! (404), wherever it points, and the two names cannot contain a `/` or be `..`, so the
//! kernel resolves nothing outside `http_root/<uuid>/`. The cache hardlinks (or copies), so
//! nothing it puts there is a symlink. `http_root` itself may be a symlink: the operator
//! chose that path. A directory, a FIFO or a device is not a regular file: 404 (the open
//! is non-blocking, so a FIFO cannot hang it).
//!
//! **One descriptor.** The response's `Content-Length`, `ETag`, `Last-Modified` and bytes
//! all come from the descriptor opened once (`fstat`, then reads), so an image renamed over
//! the node's link mid-request (the cache's atomic replace) never mixes the validators of
//! one inode with the bytes of another: the old inode is served whole.
//!
//! **Headers.** `Accept-Ranges: bytes`; `ETag` (strong: inode, size and mtime in
//! nanoseconds; hardlinks of one master share it); `Last-Modified`; `If-None-Match`
//! (weak comparison, `*`; takes precedence over `If-Modified-Since`, RFC 9110 §13.2.2) and
//! `If-Modified-Since` answer 304; one `Range` (`a-b`, `a-`, `-n`) answers 206 with
//! `Content-Range`, an unsatisfiable one 416 with `Content-Range: bytes */size`; `If-Range`
//! (an ETag, strong comparison, or the exact `Last-Modified` date) keeps the range only for
//! the same file, so a resumed download never splices two images. A Range with several
//! ranges, another unit or bad syntax is ignored (200, the whole file), as RFC 9110 allows.
//!
//! **Flat memory.** The body is read on demand in [`CHUNK`]-byte pieces on the blocking
//! pool; hyper polls for the next piece only while its write queue is short (about 400 KiB),
//! so a connection holds at most that plus one piece, however large the file and however
//! slow the reader. Read buffers are reused (a pool of at most [`POOLED`]).
//!
//! Why not `tower-http`'s `ServeFile`: it sends no `ETag` and ignores `If-None-Match` (a
//! wrapper would `stat` the path separately from the `open`, so during the cache's rename
//! the ETag could name one inode and the bytes be another's, and a client's cache would keep
//! wrong bytes under a valid ETag); it opens by path, following symlinks, so a symlink
//! check before it is a check-then-use race; it has no `If-Range`, so a resumed download
//! across an image change splices two images; and it evaluates `If-Modified-Since` even
//! when `If-None-Match` is present.

use std::fs::{File, Metadata};
use std::future::Future;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Frame, SizeHint};
use rustix::fs::{Mode, OFlags};
use tokio::task::JoinHandle;

use super::error::ErrorReport;
use crate::code::ErrorCode;

/// The size of one read of a served file, and so of one body frame.
pub const CHUNK: usize = 256 * 1024;

/// Read buffers kept for reuse once hyper has sent them: at most this many (8 MiB).
/// Without them every piece is a fresh 256 KiB allocation whose pages the kernel faults in
/// and zeroes again (about one fault per three pages served, measured).
const POOLED: usize = 32;

static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// A read buffer that goes back to [`POOL`] when the last `Bytes` that points into it is
/// dropped.
struct Pooled(Vec<u8>);

impl Pooled {
    /// An empty buffer of [`CHUNK`] bytes' capacity.
    fn take() -> Vec<u8> {
        let reused = POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop();
        reused.unwrap_or_else(|| Vec::with_capacity(CHUNK))
    }
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.0);
        if buf.capacity() == CHUNK {
            buf.clear();
            let mut pool = POOL
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if pool.len() < POOLED {
                pool.push(buf);
            }
        }
    }
}

/// The longest label.
const MAX_LABEL: usize = 64;

/// `/<uuid>/<label>` split into its two names, or `None` when `path` (the raw path, not
/// percent-decoded) does not have exactly that shape.
pub fn image_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (node, label) = rest.split_once('/')?;
    (is_canonical_uuid(node) && is_label(label)).then_some((node, label))
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase hex: the only spelling served, so one
/// node's files have one URL.
fn is_canonical_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

/// 1 to 64 of `[A-Za-z0-9_.-]`, not starting with `.`.
fn is_label(s: &str) -> bool {
    (1..=MAX_LABEL).contains(&s.len())
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Why a file is not served.
#[derive(Debug)]
enum OpenError {
    /// 404; the reason is logged at debug level.
    NotFound(&'static str),
    /// Anything else: 500 `cache_io`, logged.
    Io(io::Error),
}

/// Opens `root/node/label` for reading, refusing a symlink at both levels, and returns it
/// with its metadata (`fstat` of the same descriptor). Blocking.
fn open_image(root: &Path, node: &str, label: &str) -> Result<(File, Metadata), OpenError> {
    let classify = |e: rustix::io::Errno| match e {
        rustix::io::Errno::NOENT => OpenError::NotFound("no such file"),
        rustix::io::Errno::NOTDIR => OpenError::NotFound("the node's path is not a directory"),
        // O_NOFOLLOW on a symlink: ELOOP on Linux, EMLINK on the BSDs.
        rustix::io::Errno::LOOP | rustix::io::Errno::MLINK => {
            OpenError::NotFound("a symbolic link, refused")
        }
        e => OpenError::Io(e.into()),
    };
    let dir = rustix::fs::open(
        root.join(node),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(classify)?;
    let fd = rustix::fs::openat(
        &dir,
        label,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(classify)?;
    let file = File::from(fd);
    let meta = file.metadata().map_err(OpenError::Io)?;
    if !meta.is_file() {
        return Err(OpenError::NotFound("not a regular file"));
    }
    Ok((file, meta))
}

/// The validators of one opened file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Validators {
    /// The opaque tag, quotes included.
    etag: String,
    /// Seconds since the epoch (`Last-Modified` has no finer resolution).
    modified: SystemTime,
}

impl Validators {
    fn of(meta: &Metadata) -> Validators {
        let etag = format!(
            "\"{:x}-{:x}-{:x}.{:x}\"",
            meta.ino(),
            meta.size(),
            meta.mtime(),
            meta.mtime_nsec()
        );
        let secs = u64::try_from(meta.mtime()).unwrap_or(0);
        Validators {
            etag,
            modified: UNIX_EPOCH + Duration::from_secs(secs),
        }
    }
}

/// RFC 9110's weak comparison of an `If-None-Match` list with our tag; `*` matches.
fn none_match_hits(header: &str, etag: &str) -> bool {
    let ours = etag.trim_start_matches("W/");
    header
        .split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == ours)
}

/// `If-Range`: the range is kept only when the validator names this very file: our strong
/// ETag exactly, or our `Last-Modified` date exactly.
fn if_range_holds(value: &str, v: &Validators) -> bool {
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        value == v.etag
    } else {
        httpdate::parse_http_date(value).is_ok_and(|date| date == v.modified)
    }
}

/// What a `Range` header asks of a file of `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ranged {
    /// Serve the whole file: no `Range`, or one we ignore (another unit, bad syntax,
    /// several ranges).
    Whole,
    /// Bytes `start..=end`, both within the file.
    Part { start: u64, end: u64 },
    /// 416.
    Unsatisfiable,
}

/// Digits as a `u64`, saturating (a position past any file is still a position).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.parse().unwrap_or(u64::MAX))
}

fn parse_range(header: &str, size: u64) -> Ranged {
    let header = header.trim();
    let Some((unit, set)) = header.split_once('=') else {
        return Ranged::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || set.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = set.trim().split_once('-') else {
        return Ranged::Whole;
    };
    match (first, last) {
        ("", suffix) => match digits(suffix) {
            None => Ranged::Whole,
            Some(0) => Ranged::Unsatisfiable,
            Some(_) if size == 0 => Ranged::Unsatisfiable,
            Some(n) => Ranged::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
        },
        (first, "") => match digits(first) {
            None => Ranged::Whole,
            Some(start) if start >= size => Ranged::Unsatisfiable,
            Some(start) => Ranged::Part {
                start,
                end: size - 1,
            },
        },
        (first, last) => match (digits(first), digits(last)) {
            (Some(start), Some(last)) if start <= last => {
                if start >= size {
                    Ranged::Unsatisfiable
                } else {
                    Ranged::Part {
                        start,
                        end: last.min(size - 1),
                    }
                }
            }
            _ => Ranged::Whole,
        },
    }
}

fn text(status: StatusCode, code: ErrorCode, message: &str, detail: Option<String>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{message}\n"),
    )
        .into_response();
    response
        .extensions_mut()
        .insert(ErrorReport { code, detail });
    response
}

/// Answers `GET` or `HEAD` of `root/node/label` (names already checked by [`image_path`]).
pub async fn serve(
    root: &Path,
    node: &str,
    label: &str,
    method: &Method,
    headers: &HeaderMap,
) -> Response {
    let opened = {
        let (root, node_name, label_name) =
            (root.to_path_buf(), node.to_string(), label.to_string());
        tokio::task::spawn_blocking(move || open_image(&root, &node_name, &label_name))
            .await
            .unwrap_or_else(|e| Err(OpenError::Io(io::Error::other(format!("open task: {e}")))))
    };
    let (file, meta) = match opened {
        Ok(opened) => opened,
        Err(OpenError::NotFound(why)) => {
            tracing::debug!(node, label, "image not served: {why}");
            return text(
                StatusCode::NOT_FOUND,
                ErrorCode::NotFound,
                "not found",
                None,
            );
        }
        Err(OpenError::Io(e)) => {
            return text(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::CacheIo,
                "cannot read the image",
                Some(format!("open {node}/{label} in http_root: {e}")),
            );
        }
    };
    let size = meta.len();
    let v = Validators::of(&meta);
    let header_str = |name| {
        headers
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
    };

    let mut response = Response::builder()
        .header(header::ETAG, &v.etag)
        .header(header::LAST_MODIFIED, httpdate::fmt_http_date(v.modified))
        .header(header::ACCEPT_RANGES, "bytes");

    // RFC 9110 §13.2.2: If-None-Match, else If-Modified-Since.
    let not_modified = match headers.get(header::IF_NONE_MATCH) {
        Some(tags) => tags
            .to_str()
            .is_ok_and(|tags| none_match_hits(tags, &v.etag)),
        None => header_str(header::IF_MODIFIED_SINCE)
            .and_then(|d| httpdate::parse_http_date(d).ok())
            .is_some_and(|since| v.modified <= since),
    };
    if not_modified {
        return response
            .status(StatusCode::NOT_MODIFIED)
            .body(Body::empty())
            .unwrap_or_else(|_| StatusCode::NOT_MODIFIED.into_response());
    }

    // If-Range keeps the Range only for this very file; a value that is not text never
    // names it.
    let range_applies = headers
        .get(header::IF_RANGE)
        .is_none_or(|value| value.to_str().is_ok_and(|value| if_range_holds(value, &v)));
    let ranged = match header_str(header::RANGE) {
        Some(range) if range_applies => parse_range(range, size),
        _ => Ranged::Whole,
    };
    let (start, len) = match ranged {
        Ranged::Whole => (0, size),
        Ranged::Part { start, end } => {
            response = response
                .status(StatusCode::PARTIAL_CONTENT)
                .header(header::CONTENT_RANGE, format!("bytes {start}-{end}/{size}"));
            (start, end - start + 1)
        }
        Ranged::Unsatisfiable => {
            let mut r = text(
                StatusCode::RANGE_NOT_SATISFIABLE,
                ErrorCode::RangeNotSatisfiable,
                "range not satisfiable",
                None,
            );
            r.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{size}"))
                    .unwrap_or(HeaderValue::from_static("bytes */0")),
            );
            return r;
        }
    };
    response = response
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::CONTENT_LENGTH, len);
    let body = if method == Method::HEAD || len == 0 {
        Body::empty()
    } else {
        Body::new(FileBody::new(file, format!("{node}/{label}"), start, len))
    };
    response.body(body).unwrap_or_else(|e| {
        text(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::CacheIo,
            "cannot read the image",
            Some(format!("response for {node}/{label}: {e}")),
        )
    })
}

/// `len` bytes of an open file from `start`, read on the blocking pool one [`CHUNK`] at a
/// time, each read starting only when hyper asks for the next frame.
struct FileBody {
    file: Arc<File>,
    /// `<uuid>/<label>`, for the log.
    name: String,
    /// Seek to this offset before the first read.
    seek: Option<u64>,
    remaining: u64,
    reading: Option<JoinHandle<io::Result<Vec<u8>>>>,
}

impl FileBody {
    fn new(file: File, name: String, start: u64, len: u64) -> FileBody {
        FileBody {
            file: Arc::new(file),
            name,
            seek: (start > 0).then_some(start),
            remaining: len,
            reading: None,
        }
    }
}

impl HttpBody for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let reading = this.reading.get_or_insert_with(|| {
            let file = Arc::clone(&this.file);
            let seek = this.seek.take();
            let want = this.remaining.min(CHUNK as u64);
            tokio::task::spawn_blocking(move || {
                let mut f = &*file;
                if let Some(offset) = seek {
                    f.seek(SeekFrom::Start(offset))?;
                }
                // `read_to_end` fills spare capacity without zeroing it first; `want` fits
                // the capacity, so it never reallocates.
                let mut buf = Pooled::take();
                f.take(want).read_to_end(&mut buf)?;
                Ok(buf)
            })
        });
        let read = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let failed = |this: &mut FileBody, e: io::Error| {
            // hyper closes the connection: the client sees a short body, never a wrong one.
            tracing::warn!(file = %this.name, "image read failed while serving it: {e}");
            this.remaining = 0;
            Poll::Ready(Some(Err(e)))
        };
        let chunk = match read {
            // The file is ours (a hardlink that is only ever replaced by a rename), so an
            // early end is someone truncating it: end the response short rather than hang.
            Ok(Ok(chunk)) if chunk.is_empty() => {
                let e = io::Error::new(io::ErrorKind::UnexpectedEof, "the file became shorter");
                return failed(this, e);
            }
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return failed(this, e),
            Err(e) => return failed(this, io::Error::other(format!("read task: {e}"))),
        };
        this.remaining -= chunk.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_owner(Pooled(chunk))))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b7c4a5e-3f1d-4e2a-9c8b-7d6e5f4a3b2c";

    #[test]
    fn only_uuid_slash_label_is_an_image_path() {
        assert_eq!(
            image_path(&format!("/{UUID}/deploy_kernel")),
            Some((UUID, "deploy_kernel"))
        );
        assert_eq!(
            image_path(&format!("/{UUID}/a.b-c_D9")),
            Some((UUID, "a.b-c_D9"))
        );
        let long = "k".repeat(64);
        assert!(image_path(&format!("/{UUID}/{long}")).is_some());
        for bad in [
            format!("/{UUID}/{long}x"),
            format!("/{UUID}/"),
            format!("/{UUID}"),
            format!("/{UUID}/.kernel"),
            format!("/{UUID}/.."),
            format!("/{UUID}/a/b"),
            format!("/{UUID}//kernel"),
            format!("/{UUID}/%6bernel"),
            format!("/{UUID}/kernel%00"),
            format!("/{UUID}/ker\\nel"),
            format!("/{UUID}/kernel;x"),
            format!("/{UUID}/kérnel"),
            format!("//{UUID}/kernel"),
            format!("/{}/kernel", UUID.to_uppercase()),
            format!("/{}/kernel", UUID.replace('-', "")),
            format!("/{{{UUID}}}/kernel"),
            format!("{UUID}/kernel"),
            "/pxelinux.cfg/52-54-00-12-34-56".to_string(),
            "/boot.ipxe".to_string(),
        ] {
            assert_eq!(image_path(&bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges() {
        use Ranged::*;
        let p = |start, end| Part { start, end };
        assert_eq!(parse_range("bytes=0-0", 10), p(0, 0));
        assert_eq!(parse_range("bytes=0-", 10), p(0, 9));
        assert_eq!(parse_range("bytes=9-", 10), p(9, 9));
        assert_eq!(parse_range("bytes=2-5", 10), p(2, 5));
        assert_eq!(parse_range("bytes=2-500", 10), p(2, 9));
        assert_eq!(parse_range("bytes=2-99999999999999999999999", 10), p(2, 9));
        assert_eq!(parse_range("bytes=-3", 10), p(7, 9));
        assert_eq!(parse_range("bytes=-30", 10), p(0, 9));
        assert_eq!(parse_range("BYTES = 1-2", 10), p(1, 2));
        assert_eq!(parse_range("bytes=10-", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=10-20", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 10), Unsatisfiable);
        assert_eq!(parse_range("bytes=-1", 0), Unsatisfiable);
        assert_eq!(parse_range("bytes=0-", 0), Unsatisfiable);
        for ignored in [
            "bytes=5-2",
            "bytes=a-b",
            "bytes=-",
            "bytes=+1-2",
            "bytes=1-2,4-5",
            "items=1-2",
            "bytes",
            "",
            "bytes=1 -2",
        ] {
            assert_eq!(parse_range(ignored, 10), Whole, "{ignored}");
        }
    }

    #[test]
    fn etag_comparisons() {
        let v = Validators {
            etag: "\"1-2-3.4\"".into(),
            modified: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        assert!(none_match_hits("\"1-2-3.4\"", &v.etag));
        assert!(none_match_hits("W/\"1-2-3.4\"", &v.etag));
        assert!(none_match_hits("\"x\", \"1-2-3.4\"", &v.etag));
        assert!(none_match_hits("*", &v.etag));
        assert!(!none_match_hits("\"1-2-3.5\"", &v.etag));
        assert!(!none_match_hits("", &v.etag));
        assert!(if_range_holds("\"1-2-3.4\"", &v));
        assert!(
            !if_range_holds("W/\"1-2-3.4\"", &v),
            "If-Range compares strongly"
        );
        assert!(!if_range_holds("\"other\"", &v));
        assert!(if_range_holds("Tue, 14 Nov 2023 22:13:20 GMT", &v));
        assert!(!if_range_holds("Tue, 14 Nov 2023 22:13:21 GMT", &v));
        assert!(!if_range_holds("garbage", &v));
    }
}
