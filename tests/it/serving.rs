//! The boot listener serving images from `[deploy] http_root`: `GET`/`HEAD
//! /<node uuid>/<label>` with its headers (ETag, Last-Modified, conditionals, ranges),
//! streaming in flat memory, and nothing outside `http_root` whatever the path says.
//!
//! The files are written here the way the image cache puts them (a regular file in
//! `http_root/<uuid>/`). Paths that must not be normalised on the way (dot segments,
//! encodings, raw bytes) go through [`raw`], which writes the request line itself.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::server::{Db, TestServer};

const NODE: &str = "4f1c2b3a-5d6e-4a7b-8c9d-0e1f2a3b4c5d";
const OTHER_NODE: &str = "9a8b7c6d-5e4f-4321-8fed-cba987654321";

/// Deterministic bytes where every 8-byte word depends on its position, so a wrong offset
/// or a repeated chunk shows.
fn pattern(offset: u64, len: usize) -> Vec<u8> {
    (offset..offset + len as u64)
        .map(|i| ((i / 8).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> ((i % 8) * 8)) as u8)
        .collect()
}

/// Writes `len` bytes of [`pattern`] to `path`, a MiB at a time.
fn write_pattern(path: &Path, len: u64) {
    use std::io::Write;
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut f = std::fs::File::create(path).unwrap();
    let mut done = 0;
    while done < len {
        let n = (len - done).min(1 << 20);
        f.write_all(&pattern(done, n as usize)).unwrap();
        done += n;
    }
}

/// One response read off the wire: status (0 when the server closed without answering),
/// the head as text, the body bytes.
#[derive(Debug)]
struct Raw {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }
}

/// Sends `<method> <target> HTTP/1.1` with `headers` (each `Name: value\r\n`) and
/// `Connection: close`, exactly as given, and reads the whole answer.
async fn raw(s: &TestServer, method: &str, target: &[u8], headers: &str) -> Raw {
    let addr = s.boot.trim_start_matches("http://");
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(target);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    request.extend_from_slice(headers.as_bytes());
    request.extend_from_slice(b"\r\n");
    conn.write_all(&request).await.unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut all))
        .await
        .unwrap_or_else(|_| panic!("no answer to {}", String::from_utf8_lossy(target)))
        .ok();
    let split = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(all.len(), |i| i + 4);
    let head = String::from_utf8_lossy(&all[..split]).to_string();
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Raw {
        status,
        head,
        body: all[split..].to_vec(),
    }
}

/// A server whose static mirror is written: the refresh at start removes every
/// `http_root/<uuid>` of a node it does not know.
async fn start(extra: &str) -> TestServer {
    // the mirror was written (and swept) before the server started; the next refresh is
    // an interval away, so nothing removes the files a test puts in http_root
    TestServer::start(Db::Sqlite, extra).await
}

async fn get(s: &TestServer, path: &str, headers: &str) -> Raw {
    raw(s, "GET", path.as_bytes(), headers).await
}

#[tokio::test]
async fn get_and_head_serve_the_file_with_its_validators() {
    let s = start("").await;
    let size = (1 << 20) + 4321;
    let path = s.http_root().join(NODE).join("deploy_kernel");
    write_pattern(&path, size);
    let url = format!("/{NODE}/deploy_kernel");

    let full = get(&s, &url, "").await;
    assert_eq!(full.status, 200, "{}", full.head);
    assert!(
        full.body == pattern(0, size as usize),
        "the body is the file"
    );
    assert_eq!(full.header("content-length"), Some(size.to_string()));
    assert_eq!(full.header("accept-ranges").as_deref(), Some("bytes"));
    let etag = full.header("etag").expect("an ETag");
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    let modified = full.header("last-modified").expect("a Last-Modified");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    assert_eq!(modified, httpdate::fmt_http_date(mtime));

    // reqwest agrees (a normal client, keep-alive).
    let (status, _) = s.boot_get(&url).await;
    assert_eq!(status, StatusCode::OK);

    let head = raw(&s, "HEAD", url.as_bytes(), "").await;
    assert_eq!(head.status, 200, "{}", head.head);
    assert!(head.body.is_empty(), "HEAD sends no body");
    for h in ["content-length", "etag", "last-modified", "accept-ranges"] {
        assert_eq!(head.header(h), full.header(h), "{h}");
    }

    // Every label shape the cache uses, and the other node's files are its own.
    for label in ["kernel", "ramdisk", "deploy_ramdisk", "a.b-c_D9"] {
        std::fs::write(s.http_root().join(NODE).join(label), label).unwrap();
        let r = get(&s, &format!("/{NODE}/{label}"), "").await;
        assert_eq!((r.status, r.body.as_slice()), (200, label.as_bytes()));
    }
    std::fs::create_dir_all(s.http_root().join(OTHER_NODE)).unwrap();
    std::fs::write(s.http_root().join(OTHER_NODE).join("kernel"), "other").unwrap();
    let r = get(&s, &format!("/{OTHER_NODE}/kernel"), "").await;
    assert_eq!((r.status, r.body.as_slice()), (200, b"other".as_slice()));
    // An empty file.
    std::fs::write(s.http_root().join(NODE).join("empty"), "").unwrap();
    let r = get(&s, &format!("/{NODE}/empty"), "").await;
    assert_eq!((r.status, r.body.len()), (200, 0));
    assert_eq!(r.header("content-length").as_deref(), Some("0"));
    s.stop().await;
}

#[tokio::test]
async fn conditional_requests_answer_304() {
    let s = start("").await;
    let path = s.http_root().join(NODE).join("kernel");
    write_pattern(&path, 10_000);
    let url = format!("/{NODE}/kernel");
    let first = get(&s, &url, "").await;
    let etag = first.header("etag").unwrap();
    let modified = first.header("last-modified").unwrap();

    let inm = |tag: &str| format!("If-None-Match: {tag}\r\n");
    for (headers, status) in [
        (inm(&etag), 304),
        (inm(&format!("W/{etag}")), 304),
        (inm(&format!("\"nope\", {etag}")), 304),
        (inm("*"), 304),
        (inm("\"nope\""), 200),
        (format!("If-Modified-Since: {modified}\r\n"), 304),
        (
            "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n".to_string(),
            200,
        ),
        ("If-Modified-Since: yesterday\r\n".to_string(), 200),
        // If-None-Match wins over If-Modified-Since (RFC 9110 section 13.2.2).
        (
            format!("{}If-Modified-Since: {modified}\r\n", inm("\"nope\"")),
            200,
        ),
    ] {
        let r = get(&s, &url, &headers).await;
        assert_eq!(r.status, status, "{headers}{}", r.head);
        if status == 304 {
            assert!(r.body.is_empty(), "{headers}");
            assert_eq!(r.header("etag").as_deref(), Some(etag.as_str()));
        } else {
            assert_eq!(r.body.len(), 10_000, "{headers}");
        }
    }

    // The cache replaces an image by renaming a new file over the link: a new ETag, so
    // the old one no longer matches.
    let tmp = s.http_root().join(NODE).join(".kernel.tmp-1");
    std::fs::write(&tmp, "a new image").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    let r = get(&s, &url, &inm(&etag)).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (200, b"a new image".as_slice())
    );
    assert_ne!(r.header("etag").unwrap(), etag);
    s.stop().await;
}

#[tokio::test]
async fn ranges_answer_206_and_416() {
    let s = start("").await;
    let size: u64 = 3 * 256 * 1024 + 77; // more than one read chunk
    write_pattern(&s.http_root().join(NODE).join("ramdisk"), size);
    let url = format!("/{NODE}/ramdisk");
    let etag = get(&s, &url, "").await.header("etag").unwrap();
    let range = |spec: &str| format!("Range: {spec}\r\n");

    for (spec, start, end) in [
        ("bytes=0-0".to_string(), 0, 0),
        ("bytes=0-99".to_string(), 0, 99),
        (
            format!("bytes={}-{}", size - 100, size - 1),
            size - 100,
            size - 1,
        ),
        ("bytes=262100-262200".to_string(), 262_100, 262_200),
        ("bytes=1000-".to_string(), 1000, size - 1),
        ("bytes=-500".to_string(), size - 500, size - 1),
        (format!("bytes=-{}", size + 10), 0, size - 1),
        (format!("bytes=5-{}", size * 2), 5, size - 1),
    ] {
        for method in ["GET", "HEAD"] {
            let r = raw(&s, method, url.as_bytes(), &range(&spec)).await;
            assert_eq!(r.status, 206, "{spec}: {}", r.head);
            assert_eq!(
                r.header("content-range"),
                Some(format!("bytes {start}-{end}/{size}")),
                "{spec}"
            );
            let len = end - start + 1;
            assert_eq!(r.header("content-length"), Some(len.to_string()), "{spec}");
            if method == "GET" {
                assert!(
                    r.body == pattern(start, len as usize),
                    "{spec}: the body is bytes {start}..={end}"
                );
            } else {
                assert!(r.body.is_empty());
            }
        }
    }

    for spec in [
        format!("bytes={size}-"),
        format!("bytes={}-{}", size + 1, size + 9),
        "bytes=-0".to_string(),
    ] {
        let r = get(&s, &url, &range(&spec)).await;
        assert_eq!(r.status, 416, "{spec}: {}", r.head);
        assert_eq!(r.header("content-range"), Some(format!("bytes */{size}")));
    }
    assert_eq!(
        s.metric("ironboot_errors_total{reason=\"range_not_satisfiable\"}")
            .await,
        Some(3.0)
    );

    // Ranges that are ignored: the whole file.
    for spec in ["bytes=0-1,5-6", "items=0-1", "bytes=9-2", "bytes=x-"] {
        let r = get(&s, &url, &range(spec)).await;
        assert_eq!((r.status, r.body.len() as u64), (200, size), "{spec}");
    }

    // If-Range: the range holds for this very file only.
    let r = get(
        &s,
        &url,
        &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"),
    )
    .await;
    assert_eq!((r.status, r.body.len()), (206, 10));
    let r = get(&s, &url, "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n").await;
    assert_eq!((r.status, r.body.len() as u64), (200, size));
    s.stop().await;
}

#[tokio::test]
async fn directories_and_special_files_are_not_served() {
    let s = start("").await;
    let node = s.http_root().join(NODE);
    std::fs::create_dir_all(node.join("subdir")).unwrap();
    std::fs::write(node.join("subdir").join("kernel"), "in a subdir").unwrap();
    std::fs::write(s.http_root().join(OTHER_NODE), "a file, not a directory").unwrap();
    let fifo = node.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    for path in [
        format!("/{NODE}/subdir"),
        format!("/{NODE}/subdir/"),
        format!("/{NODE}/"),
        format!("/{NODE}"),
        format!("/{OTHER_NODE}/kernel"),
        format!("/{NODE}/missing"),
        "/".to_string(),
    ] {
        for method in ["GET", "HEAD"] {
            let r = raw(&s, method, path.as_bytes(), "").await;
            assert_eq!(r.status, 404, "{method} {path}: {}", r.head);
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                !body.contains("subdir") && !body.contains("kernel"),
                "{body}"
            );
        }
    }
    // A FIFO is not opened for reading (that would wait for a writer). Should it ever
    // block, a writer unblocks it so that the test fails instead of hanging.
    for method in ["GET", "HEAD"] {
        let path = format!("/{NODE}/fifo");
        match tokio::time::timeout(Duration::from_secs(5), raw(&s, method, path.as_bytes(), ""))
            .await
        {
            Ok(r) => assert_eq!(r.status, 404, "{method} {path}: {}", r.head),
            Err(_) => {
                use std::os::unix::fs::OpenOptionsExt;
                let _writer = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(0o4000) // O_NONBLOCK
                    .open(&fifo);
                panic!("{method} {path} blocked on the FIFO");
            }
        }
    }
    // Counted under the existing code, by route.
    // (subdir, the file in place of a node directory, missing and the FIFO, by GET and
    // HEAD: the paths of other shapes are the fallback's plain 404, as before.)
    assert_eq!(
        s.metric("ironboot_errors_total{reason=\"not_found\"}")
            .await,
        Some(8.0)
    );
    s.stop().await;
}

#[tokio::test]
async fn the_other_boot_routes_still_work() {
    let s = start("[ipxe]\nfallback_script = inspector.ipxe\n").await;
    std::fs::write(
        s.http_root().join("inspector.ipxe"),
        "#!ipxe\necho inspect\n",
    )
    .unwrap();
    write_pattern(&s.http_root().join(NODE).join("kernel"), 100);
    assert_eq!(get(&s, "/boot.ipxe", "").await.status, 200);
    let fallback = get(&s, "/inspector.ipxe", "").await;
    assert_eq!(
        (fallback.status, fallback.body.as_slice()),
        (200, b"#!ipxe\necho inspect\n".as_slice())
    );
    assert_eq!(
        get(&s, "/pxelinux.cfg/52-54-00-aa-bb-cc", "").await.status,
        404
    );
    assert_eq!(get(&s, "/pxelinux.cfg/not-a-mac", "").await.status, 404);
    assert_eq!(get(&s, "/pxelinux.cfg/x/y", "").await.status, 404);
    assert_eq!(get(&s, "/boot.ipxe/kernel", "").await.status, 404);
    assert_eq!(get(&s, &format!("/{NODE}/kernel"), "").await.status, 200);
    // Other methods are refused as on every boot route.
    let r = raw(
        &s,
        "POST",
        format!("/{NODE}/kernel").as_bytes(),
        "Content-Length: 0\r\n",
    )
    .await;
    assert_eq!(r.status, 405, "{}", r.head);
    s.stop().await;
}

/// Escapes: every one gets a 4xx and none of the files it aims at.
#[tokio::test]
async fn nothing_outside_http_root_or_off_the_shape_is_served() {
    let s = start("").await;
    let root = s.http_root();
    let state = s.dir.path();
    // Outside http_root: a secret beside it and a directory that looks like a node's.
    let secret = "SECRET-9f8e7d6c";
    std::fs::write(state.join("secret"), secret).unwrap();
    std::fs::create_dir_all(state.join("outside")).unwrap();
    std::fs::write(state.join("outside").join("kernel"), secret).unwrap();
    std::fs::write(state.join("outside").join("secret"), secret).unwrap();
    // Inside http_root, files that exist but are off the served shape.
    let hidden = "HIDDEN-1a2b3c";
    let node = root.join(NODE);
    std::fs::create_dir_all(&node).unwrap();
    std::fs::write(node.join("kernel"), "the kernel").unwrap();
    std::fs::write(node.join(".kernel.tmp-0123"), hidden).unwrap();
    std::fs::write(node.join("l".repeat(65)), hidden).unwrap();
    std::fs::create_dir_all(node.join("a")).unwrap();
    std::fs::write(node.join("a").join("b"), hidden).unwrap();
    std::fs::write(node.join("label;x"), hidden).unwrap();
    std::fs::create_dir_all(root.join(NODE.to_uppercase())).unwrap();
    std::fs::write(root.join(NODE.to_uppercase()).join("kernel"), hidden).unwrap();
    std::fs::create_dir_all(root.join(NODE.replace('-', ""))).unwrap();
    std::fs::write(root.join(NODE.replace('-', "")).join("kernel"), hidden).unwrap();
    // Symlinks: out of http_root, a node directory out of it, and one that stays inside
    // (refused too: no symlink is followed).
    std::os::unix::fs::symlink(state.join("secret"), node.join("leak")).unwrap();
    std::os::unix::fs::symlink(state.join("outside"), root.join(OTHER_NODE)).unwrap();
    std::os::unix::fs::symlink(node.join("kernel"), node.join("inside")).unwrap();
    std::os::unix::fs::symlink("../../secret", node.join("relative")).unwrap();

    // The legitimate path works, so the refusals below are not a server that serves nothing.
    let ok = get(&s, &format!("/{NODE}/kernel"), "").await;
    assert_eq!(
        (ok.status, ok.body.as_slice()),
        (200, b"the kernel".as_slice())
    );

    let n = NODE;
    let up = NODE.to_uppercase();
    let escapes: Vec<Vec<u8>> = [
        "/../secret".to_string(),
        "/../../../../../../etc/passwd".to_string(),
        "/%2e%2e/secret".to_string(),
        "/%2E%2E/secret".to_string(),
        "/.%2e/secret".to_string(),
        "/./../secret".to_string(),
        format!("/{n}/../../secret"),
        format!("/{n}/../../outside/secret"),
        format!("/{n}/..%2f..%2fsecret"),
        format!("/{n}/..%2F..%2Fsecret"),
        format!("/{n}/%2e%2e%2f%2e%2e%2fsecret"),
        format!("/{n}/%2e%2e/%2e%2e/secret"),
        format!("/{n}/..%252f..%252fsecret"),
        format!("/{n}/kernel%2f..%2f..%2f..%2fsecret"),
        "//etc/passwd".to_string(),
        "/%2fetc%2fpasswd".to_string(),
        format!("/{n}//etc/passwd"),
        format!("/{n}/%2fetc%2fpasswd"),
        format!("/{n}/..\\..\\secret"),
        format!("/{n}/..%5c..%5csecret"),
        format!("/{n}/%2e%2e%5c%2e%2e%5csecret"),
        format!("/{n}/kernel%00"),
        format!("/{n}/label%00.txt"),
        format!("/{n}/%00/../../secret"),
        format!("/{n}/leak"),
        format!("/{n}/relative"),
        format!("/{n}/inside"),
        format!("/{OTHER_NODE}/kernel"),
        format!("/{OTHER_NODE}/secret"),
        format!("/{up}/kernel"),
        format!("/{}/kernel", NODE.replace('-', "")),
        format!("/{n}/.kernel.tmp-0123"),
        format!("/{n}/.."),
        format!("/{n}/..."),
        format!("/{n}/{}", "l".repeat(65)),
        format!("/{n}/"),
        format!("/{n}/a/b"),
        format!("/{n}/kernel/"),
        format!("/{n}/%c0%ae%c0%ae/%c0%ae%c0%ae/secret"),
        "/%c0%ae%c0%ae/secret".to_string(),
        "/%c0%2e%c0%2e/secret".to_string(),
        format!("/{n}/%e0%80%ae%e0%80%ae/secret"),
        format!("/{n}/label;x"),
        format!("/{n}/kernel;/../../secret"),
        "/..;/secret".to_string(),
        format!("/{n};/../secret"),
        "/?/../secret".to_string(),
        format!("/{n}/?/../../secret"),
        format!("/{n}%3f/../../secret"),
        format!("/{n}/%3f/../../secret"),
        "/pxelinux.cfg/../../secret".to_string(),
        "http://x/../secret".to_string(),
        format!("http://x/{n}/../../secret"),
    ]
    .into_iter()
    .map(String::into_bytes)
    .chain([
        // Raw bytes that are not ASCII: overlong UTF-8 dots, a lone continuation byte, a
        // raw NUL.
        [format!("/{n}/").as_bytes(), b"\xc0\xae\xc0\xae/secret"].concat(),
        b"/\xc0\xae\xc0\xae/secret".to_vec(),
        [format!("/{n}/kernel").as_bytes(), b"\x80"].concat(),
        [format!("/{n}/kernel").as_bytes(), b"\x00"].concat(),
    ])
    .collect();
    assert!(escapes.len() >= 20);

    let mut seen = std::collections::BTreeMap::new();
    for target in &escapes {
        let shown = String::from_utf8_lossy(target).to_string();
        for method in ["GET", "HEAD"] {
            let r = raw(&s, method, target, "").await;
            let body = String::from_utf8_lossy(&r.body);
            assert!(
                (400..500).contains(&r.status),
                "{method} {shown}: {}{body}",
                r.head
            );
            for forbidden in [secret, hidden, "root:x:0", "the kernel"] {
                assert!(
                    !body.contains(forbidden) && !r.head.contains(forbidden),
                    "{method} {shown} served {forbidden}"
                );
            }
            *seen.entry(r.status).or_insert(0) += 1;
        }
    }
    eprintln!(
        "{} escape forms, answers by status: {seen:?}",
        escapes.len()
    );
    s.stop().await;
}

/// How far this process has read `path`: the position of the descriptor open on it
/// (`/proc/self/fdinfo`), if one is.
fn read_position(path: &std::path::Path) -> Option<u64> {
    for entry in std::fs::read_dir("/proc/self/fd").ok()?.flatten() {
        if std::fs::read_link(entry.path()).ok().as_deref() != Some(path) {
            continue;
        }
        let info = std::fs::read_to_string(
            std::path::Path::new("/proc/self/fdinfo").join(entry.file_name()),
        )
        .ok()?;
        return info
            .lines()
            .find_map(|l| l.strip_prefix("pos:"))
            .and_then(|p| p.trim().parse().ok());
    }
    None
}

/// A file truncated under a response in progress (only someone outside ironboot would do
/// that: the cache replaces files by renaming) ends the response short and closes the
/// connection; it never hangs and never sends other bytes.
#[tokio::test]
async fn a_file_truncated_while_served_ends_the_response_short() {
    const SIZE: u64 = 48 << 20;
    let s = start("").await;
    let path = s.http_root().join(NODE).join("kernel");
    write_pattern(&path, SIZE);
    let mut conn = TcpStream::connect(s.boot.trim_start_matches("http://"))
        .await
        .unwrap();
    conn.write_all(format!("GET /{NODE}/kernel HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut received = vec![0u8; 4096];
    let n = conn.read(&mut received).await.unwrap();
    received.truncate(n);
    // The server (in this process) has read the file a MiB in and is stalled by the socket
    // buffers a few MiB in; cut the file well past that.
    crate::support::wait_for("the server to read 1 MiB of the file", || async {
        read_position(&path).is_some_and(|pos| pos >= 1 << 20)
    })
    .await;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(SIZE / 2)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut received))
        .await
        .expect("the connection is closed")
        .ok();
    let split = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..split]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {SIZE}")), "{head}");
    let body = &received[split..];
    eprintln!("{} of {SIZE} bytes before the close", body.len());
    assert!(
        (body.len() as u64) <= SIZE / 2,
        "the body stops where the file now ends at the latest: {}",
        body.len()
    );
    assert!(body == pattern(0, body.len()), "and is the file's bytes");
    s.stop().await;
}

/// VmRSS of this process (the test runs the server in-process), in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Samples [`rss_kib`] every 2 ms on its own thread until stopped; returns the highest.
struct RssPeak {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssPeak {
    fn start() -> RssPeak {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut peak = rss_kib();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib());
                std::thread::sleep(Duration::from_millis(2));
            }
            peak.max(rss_kib())
        });
        RssPeak { stop, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// A cheap digest of a stream: length and a position-dependent sum of its bytes.
#[derive(Debug, Default, PartialEq, Eq)]
struct Digest {
    len: u64,
    sum: u64,
}

impl Digest {
    fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.sum = self
                .sum
                .wrapping_add(u64::from(*b).wrapping_mul(self.len | 1));
            self.len += 1;
        }
    }
}

/// GETs `url`, dropping each chunk once counted.
async fn stream_get(client: &reqwest::Client, url: &str) -> Digest {
    let mut response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut digest = Digest::default();
    while let Some(chunk) = response.chunk().await.unwrap() {
        digest.update(&chunk);
    }
    digest
}

/// One round: `clients` concurrent GETs of the whole file, twice, plus `slow` readers that
/// ask for it and then read nothing for a while. Returns the RSS growth in KiB.
async fn one_round(
    s: &TestServer,
    url: &str,
    expected: &Digest,
    clients: usize,
    slow: usize,
) -> u64 {
    let base = rss_kib();
    let peak = RssPeak::start();
    let mut stalled = Vec::new();
    for _ in 0..slow {
        let mut conn = TcpStream::connect(s.boot.trim_start_matches("http://"))
            .await
            .unwrap();
        let path = url.trim_start_matches(&s.boot);
        conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut first = [0u8; 1024];
        let _ = conn.read(&mut first).await.unwrap();
        stalled.push(conn);
    }
    let client = reqwest::Client::new();
    for _ in 0..2 {
        let gets: Vec<_> = (0..clients)
            .map(|_| {
                let client = client.clone();
                let url = url.to_string();
                tokio::spawn(async move { stream_get(&client, &url).await })
            })
            .collect();
        for g in gets {
            assert_eq!(&g.await.unwrap(), expected);
        }
    }
    // The slow readers asked before both rounds: a server that buffered their files has
    // done so by now, while the rounds ran.
    let peak = peak.finish();
    drop(stalled);
    peak.saturating_sub(base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_files_stream_in_flat_memory() {
    const SIZE: u64 = 64 << 20;
    /// Four clients downloading 64 MiB each at once, and four readers that stall: a server
    /// that buffered a file would grow by hundreds of MiB.
    const LIMIT_KIB: u64 = 16 << 10;
    let s = start("").await;
    let path = s.http_root().join(NODE).join("deploy_ramdisk");
    write_pattern(&path, SIZE);
    let mut expected = Digest::default();
    for offset in (0..SIZE).step_by(1 << 20) {
        expected.update(&pattern(offset, 1 << 20));
    }
    let url = format!("{}/{NODE}/deploy_ramdisk", s.boot);

    // Warm up: the blocking pool's threads and the allocator's arenas exist before the
    // baseline is taken.
    one_round(&s, &url, &expected, 4, 0).await;
    // Other tests share this process: a round can be unlucky. A real leak or a buffered
    // file fails every round.
    let mut growths = Vec::new();
    for _ in 0..3 {
        let growth = one_round(&s, &url, &expected, 4, 4).await;
        growths.push(growth);
        if growth < LIMIT_KIB {
            break;
        }
    }
    eprintln!("RSS growth per round while serving 64 MiB files: {growths:?} KiB");
    assert!(
        growths.iter().any(|g| *g < LIMIT_KIB),
        "RSS grew by {growths:?} KiB (limit {LIMIT_KIB} KiB) while streaming {SIZE} bytes"
    );
    s.stop().await;
}
