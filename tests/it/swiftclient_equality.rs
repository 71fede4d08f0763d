//! ironboot's swiftclient form is byte-identical to python-swiftclient 4.11's
//! `generate_temp_url`, on random inputs, including the inputs swiftclient refuses.
//! Python runs once, with the whole batch. Replay a failure with `IRONBOOT_TEST_SEED`.

use std::io::Write;
use std::process::{Command, Stdio};

use ironboot::tempurl::{Digest, Method, Request, Signer, TempUrlError, expiry};
use serde_json::{Value, json};

use crate::support::{Rng, python};

const CASES: usize = 3000;

fn random_text(rng: &mut Rng, min: u64, max: u64) -> String {
    const ALPHABET: &[&str] = &[
        "a",
        "b",
        "z",
        "A",
        "Q",
        "0",
        "7",
        "-",
        "_",
        ".",
        "~",
        " ",
        "&",
        "?",
        "#",
        "%",
        "+",
        "=",
        ";",
        ":",
        "@",
        "$",
        "{",
        "}",
        "!",
        "'",
        "(",
        ")",
        ",",
        "é",
        "ï",
        "€",
        "中",
        "ß",
        "\u{1F600}",
        "%20",
        "%2F",
        "..",
    ];
    let len = min + rng.below(max - min + 1);
    (0..len).map(|_| *rng.pick(ALPHABET)).collect()
}

fn random_path(rng: &mut Rng, prefix: bool) -> String {
    match rng.below(20) {
        0 => "/info".into(),
        1 => format!("/v1/{}/{}", random_text(rng, 1, 5), random_text(rng, 1, 5)),
        2 => format!("v1/a/c/{}", random_text(rng, 1, 5)),
        3 => format!("/v1//{}/{}", random_text(rng, 1, 5), random_text(rng, 1, 5)),
        4 => format!("/v1/{}/{}/", random_text(rng, 1, 5), random_text(rng, 1, 5)),
        5 => format!(
            "https://swift.example.com/v1/a/c/{}",
            random_text(rng, 1, 5)
        ),
        _ => {
            let version = if rng.chance(90) {
                "v1".to_string()
            } else {
                random_text(rng, 1, 3)
            };
            let account = format!("AUTH_{}", random_text(rng, 0, 8));
            let container = random_text(rng, 1, 10);
            let mut object = random_text(rng, if prefix { 0 } else { 1 }, 30);
            if rng.chance(30) {
                object = format!("{object}/{}", random_text(rng, 1, 12));
            }
            format!("/{version}/{account}/{container}/{object}")
        }
    }
}

fn random_seconds(rng: &mut Rng) -> String {
    let n = rng.below(100_000_000);
    match rng.below(24) {
        0..=5 => n.to_string(),
        6 => format!("{}", 1_700_000_000 + rng.below(200_000_000)),
        7 => format!("+{n}"),
        8 => format!(" {n}\t"),
        9 => format!("{n}.0"),
        10 => format!("{}_{:03}", n % 1000 + 1, rng.below(1000)),
        11 => format!("{}e{}", rng.below(9) + 1, rng.below(6)),
        12 => format!(
            "{}{}",
            rng.below(5000),
            rng.pick(&["s", "m", "min", "h", "hr", "d"])
        ),
        13 => format!(
            "{}.{}{}",
            rng.below(100),
            rng.below(10),
            rng.pick(&["s", "m", "h", "d"])
        ),
        14 => format!("-{}{}", rng.below(100), rng.pick(&["m", "h"])),
        15 | 16 => {
            let (y, mo, d) = (1970 + rng.below(130), 1 + rng.below(12), 1 + rng.below(31));
            let (h, mi, s) = (rng.below(24), rng.below(60), rng.below(62));
            match rng.below(5) {
                0 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}Z"),
                1 => format!("{y}-{mo}-{d}T{h}:{mi}:{s}Z"),
                2 => format!("{y}-{mo:02}-{d:02}t{h:02}:{mi:02}:{s:02}z"),
                3 => format!("{y}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}"),
                _ => format!("{y}-{mo:02}-{d:02}"),
            }
        }
        _ => rng
            .pick(&[
                "",
                " ",
                "abc",
                "1.5",
                "-1",
                "-0",
                "nan",
                "inf",
                "nanh",
                "10ms",
                "1e",
                "1__0",
                "_1",
                "0x10",
                "60.5",
                "2026-02-30",
                "2026-13-01T00:00:00Z",
                "2026-11-26T24:00:00Z",
                "2026-11-26 12:00:00Z",
                "2026-11-26T12:00:00+00:00",
                "1 h",
                "h",
                "1hour",
            ])
            .to_string(),
    }
}

struct Case {
    path: String,
    seconds: String,
    key: String,
    method: String,
    absolute: bool,
    prefix: bool,
    iso8601: bool,
    ip_range: Option<String>,
    digest: Digest,
}

fn ironboot(case: &Case, now: i64) -> Result<String, TempUrlError> {
    let utc = |t: expiry::CivilTime| Ok(t.as_utc());
    let expires = expiry::parse(&case.seconds, case.absolute, &utc)?.resolve(now);
    let method = Method::parse(&case.method)?;
    let mut req = Request::new(&method, &case.path, expires);
    req.prefix = case.prefix;
    req.iso8601 = case.iso8601;
    req.ip_range = case.ip_range.as_deref();
    Ok(Signer::new(case.key.as_bytes(), case.digest)
        .sign(&req)?
        .swiftclient_form())
}

#[test]
fn swiftclient_form_is_byte_identical_to_python_swiftclient() {
    let (mut rng, seed) = Rng::from_env();
    let now = 1_795_000_000 + rng.below(100_000_000) as i64;
    let cases: Vec<Case> = (0..CASES)
        .map(|_| {
            let prefix = rng.chance(20);
            Case {
                path: random_path(&mut rng, prefix),
                seconds: random_seconds(&mut rng),
                key: random_text(&mut rng, 0, 40),
                method: rng
                    .pick(&[
                        "GET", "get", "Head", "PUT", "post", "DELETE", "delete", "PATCH",
                    ])
                    .to_string(),
                absolute: rng.chance(30),
                prefix,
                iso8601: rng.chance(30),
                ip_range: if rng.chance(25) {
                    Some(
                        rng.pick(&[
                            "",
                            "127.0.0.1",
                            "127.0.0.0/8",
                            "::1",
                            "10.1.2.3/32",
                            "fd00::/8",
                        ])
                        .to_string(),
                    )
                } else {
                    None
                },
                digest: *rng.pick(&Digest::ALL),
            }
        })
        .collect();

    let batch = json!({
        "now": now as f64,
        "cases": cases.iter().map(|c| json!({
            "path": c.path, "seconds": c.seconds, "key": c.key, "method": c.method,
            "absolute": c.absolute, "prefix": c.prefix, "iso8601": c.iso8601,
            "ip_range": c.ip_range, "digest": c.digest.as_str(),
        })).collect::<Vec<_>>(),
    });
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/swiftclient_batch.py"
    );
    let mut child = Command::new(python())
        .arg(script)
        .env("TZ", "UTC")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the Python from IRONBOOT_TEST_PYTHON");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(batch.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "swiftclient batch failed (seed {seed}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());

    let mut agreed_ok = 0;
    let mut agreed_err = 0;
    for (case, py) in cases.iter().zip(&results) {
        let ours = ironboot(case, now);
        let context = || {
            format!(
                "seed {seed}: path={:?} seconds={:?} method={:?} absolute={} prefix={} iso8601={} ip_range={:?} digest={}",
                case.path,
                case.seconds,
                case.method,
                case.absolute,
                case.prefix,
                case.iso8601,
                case.ip_range,
                case.digest
            )
        };
        match (&ours, py.get("ok").and_then(Value::as_str)) {
            (Ok(a), Some(b)) => {
                assert_eq!(a, b, "{}", context());
                agreed_ok += 1;
            }
            (Err(_), None) => agreed_err += 1,
            (Ok(a), None) => panic!(
                "ironboot signed {a:?} but swiftclient refused ({}): {}",
                py["error"],
                context()
            ),
            (Err(e), Some(b)) => panic!(
                "ironboot refused ({e}) but swiftclient signed {b:?}: {}",
                context()
            ),
        }
    }
    // The generator must exercise mostly valid inputs, and some invalid ones.
    assert!(
        agreed_ok >= 1000,
        "only {agreed_ok} signed URLs compared (seed {seed})"
    );
    assert!(
        agreed_err >= CASES / 20,
        "only {agreed_err} refusals compared (seed {seed})"
    );
    eprintln!("seed {seed}: {agreed_ok} identical URLs, {agreed_err} inputs refused by both");
}
