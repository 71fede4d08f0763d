//! The TempURL engine against a real Swift 2.38: every URL variant ironboot generates is
//! accepted for GET and HEAD, and every kind of tampering is refused with 401.

use ironboot::tempurl::{Digest, Endpoint, Method, Request, Signer, TempUrl, encode_path};
use reqwest::StatusCode;

use crate::support::swift::{Account, account_with_keys, proxy_url};
use crate::support::{now, unique};

/// Object names that break naive URL handling: unicode, space, %, &, ?, #, +, and a
/// pseudo-directory.
const HARD_NAMES: &[&str] = &[
    "plain.img",
    "naïve ünïcødé €.bin",
    "with space",
    "100%",
    "a&b=c",
    "why?not",
    "hash#tag",
    "plus+sign",
    "dir/sub dir/ä?&#%+ ${x}.txt",
];

fn endpoint() -> Endpoint {
    Endpoint::parse(&proxy_url()).unwrap()
}

fn body_for(name: &str) -> Vec<u8> {
    format!("contents of {name}\n").into_bytes()
}

/// GET and HEAD a URL; returns (GET status, GET body, HEAD status).
async fn fetch(http: &reqwest::Client, url: &str) -> (StatusCode, Vec<u8>, StatusCode) {
    let get = http.get(url).send().await.unwrap();
    let status = get.status();
    let body = get.bytes().await.unwrap().to_vec();
    let head = http.head(url).send().await.unwrap().status();
    (status, body, head)
}

async fn status(http: &reqwest::Client, method: reqwest::Method, url: &str) -> StatusCode {
    http.request(method, url)
        .body(Vec::new())
        .send()
        .await
        .unwrap()
        .status()
}

/// A container with the hard-named objects and its own two keys.
struct Fixture {
    account: Account,
    container: String,
    account_keys: [String; 2],
    container_keys: [String; 2],
}

async fn fixture() -> Fixture {
    let keys = account_with_keys().await;
    let container = unique("it-tempurl");
    let ck = [unique("ckey1"), unique("ckey2")];
    keys.account
        .put_container(
            &container,
            &[
                ("X-Container-Meta-Temp-URL-Key", &ck[0]),
                ("X-Container-Meta-Temp-URL-Key-2", &ck[1]),
            ],
        )
        .await;
    for name in HARD_NAMES {
        keys.account
            .put_object(&container, name, body_for(name))
            .await;
    }
    Fixture {
        container,
        account_keys: [keys.key1.clone(), keys.key2.clone()],
        container_keys: ck,
        account: keys.account,
    }
}

impl Fixture {
    fn object_path(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.account.path, self.container)
    }

    fn all_keys(&self) -> Vec<(&'static str, String)> {
        vec![
            ("account key 1", self.account_keys[0].clone()),
            ("account key 2", self.account_keys[1].clone()),
            ("container key 1", self.container_keys[0].clone()),
            ("container key 2", self.container_keys[1].clone()),
        ]
    }
}

#[tokio::test]
async fn every_variant_is_accepted_for_get_and_head() {
    let fx = fixture().await;
    let ep = endpoint();
    let http = &fx.account.http;
    let exp = now() + 600;
    let get = Method::get();
    let head = Method::head();
    let mut checked = 0;
    for name in HARD_NAMES {
        let path = fx.object_path(name);
        for (which, key) in fx.all_keys() {
            for digest in Digest::ALL {
                let signer = Signer::new(key.as_bytes(), digest);
                // plain, ISO-8601 expiry, single-address and network ip ranges
                let mut variants: Vec<(String, Request<'_>)> = Vec::new();
                variants.push(("plain".into(), Request::new(&get, &path, exp)));
                let mut r = Request::new(&get, &path, exp);
                r.iso8601 = true;
                variants.push(("iso8601".into(), r));
                for ip in ["127.0.0.1", "127.0.0.0/8"] {
                    let mut r = Request::new(&get, &path, exp);
                    r.ip_range = Some(ip);
                    variants.push((format!("ip_range {ip}"), r));
                }
                for (label, req) in &variants {
                    let url = signer.sign(req).unwrap().to_url(&ep);
                    let (s, body, h) = fetch(http, &url).await;
                    assert_eq!(
                        (s, h),
                        (StatusCode::OK, StatusCode::OK),
                        "{name:?} {which} {digest} {label}: {url}"
                    );
                    assert_eq!(body, body_for(name), "{name:?} {which} {digest} {label}");
                    checked += 1;
                }
                // the boot server's hot path
                let mut hot = String::new();
                signer
                    .write_get_url(&mut hot, &ep, &path, exp, None)
                    .unwrap();
                assert_eq!(
                    fetch(http, &hot).await.0,
                    StatusCode::OK,
                    "{name:?} {which} {digest} hot path"
                );
                // a HEAD-only signature works for HEAD
                let url = signer
                    .sign(&Request::new(&head, &path, exp))
                    .unwrap()
                    .to_url(&ep);
                assert_eq!(
                    status(http, reqwest::Method::HEAD, &url).await,
                    StatusCode::OK,
                    "{name:?} {which} {digest} HEAD sig"
                );
                checked += 2;
            }
        }
    }
    assert_eq!(checked, HARD_NAMES.len() * 4 * 3 * 6);
}

#[tokio::test]
async fn swiftclient_form_works_as_a_url_for_url_safe_names() {
    let fx = fixture().await;
    let path = fx.object_path("plain.img");
    let m = Method::get();
    for digest in Digest::ALL {
        let signed = Signer::new(fx.account_keys[0].as_bytes(), digest)
            .sign(&Request::new(&m, &path, now() + 60))
            .unwrap();
        let url = format!("{}{}", proxy_url(), signed.swiftclient_form());
        assert_eq!(
            fetch(&fx.account.http, &url).await.0,
            StatusCode::OK,
            "{digest}"
        );
    }
}

/// The query part of a URL, to graft onto another path (prefix URLs sign a prefix, and are
/// used for every object under it).
fn query_of(url: &TempUrl<'_>, ep: &Endpoint) -> String {
    let full = url.to_url(ep);
    full[full.find('?').unwrap()..].to_string()
}

#[tokio::test]
async fn prefix_urls_cover_objects_under_the_prefix_only() {
    let fx = fixture().await;
    let ep = endpoint();
    let m = Method::get();
    let prefix_path = fx.object_path("dir/");
    for digest in Digest::ALL {
        let signer = Signer::new(fx.container_keys[1].as_bytes(), digest);
        let mut req = Request::new(&m, &prefix_path, now() + 60);
        req.prefix = true;
        let q = query_of(&signer.sign(&req).unwrap(), &ep);
        let inside = format!(
            "{ep}{}{q}",
            encode_path(&fx.object_path("dir/sub dir/ä?&#%+ ${x}.txt"))
        );
        let (s, body, h) = fetch(&fx.account.http, &inside).await;
        assert_eq!(
            (s, h),
            (StatusCode::OK, StatusCode::OK),
            "{digest} {inside}"
        );
        assert_eq!(body, body_for("dir/sub dir/ä?&#%+ ${x}.txt"));
        let outside = format!("{ep}{}{q}", encode_path(&fx.object_path("plain.img")));
        assert_eq!(
            fetch(&fx.account.http, &outside).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} outside the prefix"
        );
    }
    // an empty prefix covers the whole container
    let signer = Signer::new(fx.account_keys[0].as_bytes(), Digest::Sha256);
    let container_path = fx.object_path("");
    let mut req = Request::new(&m, &container_path, now() + 60);
    req.prefix = true;
    let q = query_of(&signer.sign(&req).unwrap(), &ep);
    for name in HARD_NAMES {
        let url = format!("{ep}{}{q}", encode_path(&fx.object_path(name)));
        assert_eq!(
            fetch(&fx.account.http, &url).await.0,
            StatusCode::OK,
            "{name:?} under the empty prefix"
        );
    }
}

#[tokio::test]
async fn filename_and_inline_set_content_disposition() {
    let fx = fixture().await;
    let ep = endpoint();
    let m = Method::get();
    let path = fx.object_path("plain.img");
    let signer = Signer::new(fx.account_keys[0].as_bytes(), Digest::Sha256);
    let disposition = |url: String| {
        let http = fx.account.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .to_string()
        }
    };
    let mut req = Request::new(&m, &path, now() + 60);
    req.filename = Some("My Test+File.pdf");
    assert_eq!(
        disposition(signer.sign(&req).unwrap().to_url(&ep)).await,
        // Swift quotes the plain filename with quote(safe=' /'), so '+' becomes %2B there
        "attachment; filename=\"My Test%2BFile.pdf\"; filename*=UTF-8''My%20Test%2BFile.pdf"
    );
    req.inline = true;
    assert_eq!(
        disposition(signer.sign(&req).unwrap().to_url(&ep)).await,
        "inline; filename=\"My Test%2BFile.pdf\"; filename*=UTF-8''My%20Test%2BFile.pdf"
    );
    req.filename = None;
    assert_eq!(
        disposition(signer.sign(&req).unwrap().to_url(&ep)).await,
        "inline"
    );
}

#[tokio::test]
async fn tampered_expired_and_misused_urls_get_401() {
    let fx = fixture().await;
    let ep = endpoint();
    let http = &fx.account.http;
    let name = "naïve ünïcødé €.bin";
    let path = fx.object_path(name);
    let other = fx.object_path("plain.img");
    let key = fx.account_keys[0].as_bytes();
    let get = Method::get();
    let exp = now() + 600;
    for digest in Digest::ALL {
        let signer = Signer::new(key, digest);
        let good = signer
            .sign(&Request::new(&get, &path, exp))
            .unwrap()
            .to_url(&ep);
        assert_eq!(
            fetch(http, &good).await.0,
            StatusCode::OK,
            "{digest} control"
        );

        // expired, with an integer and with an ISO-8601 expiry
        let expired = signer
            .sign(&Request::new(&get, &path, now() - 1))
            .unwrap()
            .to_url(&ep);
        assert_eq!(
            fetch(http, &expired).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} expired"
        );
        let mut iso = Request::new(&get, &path, now() - 1);
        iso.iso8601 = true;
        assert_eq!(
            fetch(http, &signer.sign(&iso).unwrap().to_url(&ep)).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} expired iso"
        );

        // tampered signature (one character), expiry, path
        let sig_at = good.find("temp_url_sig=").unwrap() + "temp_url_sig=".len() + 10;
        let mut bytes = good.clone().into_bytes();
        bytes[sig_at] = if bytes[sig_at] == b'a' { b'b' } else { b'a' };
        let tampered = String::from_utf8(bytes).unwrap();
        let (s, _, h) = fetch(http, &tampered).await;
        assert_eq!(
            (s, h),
            (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED),
            "{digest} tampered sig"
        );
        let later = good.replace(
            &format!("temp_url_expires={exp}"),
            &format!("temp_url_expires={}", exp + 1),
        );
        assert_eq!(
            fetch(http, &later).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} tampered expires"
        );
        let moved = good.replacen(
            &encode_path(&path).to_string(),
            &encode_path(&other).to_string(),
            1,
        );
        assert_eq!(
            fetch(http, &moved).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} other object"
        );
        // a signature over the percent-encoded path is wrong (Swift signs the decoded path)
        let encoded = encode_path(&path).to_string();
        let wrong = signer.sign(&Request::new(&get, &encoded, exp)).unwrap();
        let url = format!(
            "{ep}{encoded}{}",
            &wrong.to_url(&ep)[wrong.to_url(&ep).find('?').unwrap()..]
        );
        assert_eq!(
            fetch(http, &url).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} signed over the encoded path"
        );

        // wrong method: a GET signature does not allow PUT, POST or DELETE; HEAD does not allow GET
        for m in [
            reqwest::Method::PUT,
            reqwest::Method::POST,
            reqwest::Method::DELETE,
        ] {
            assert_eq!(
                status(http, m.clone(), &good).await,
                StatusCode::UNAUTHORIZED,
                "{digest} GET sig used for {m}"
            );
        }
        let head_only = signer
            .sign(&Request::new(&Method::head(), &path, exp))
            .unwrap()
            .to_url(&ep);
        assert_eq!(
            status(http, reqwest::Method::GET, &head_only).await,
            StatusCode::UNAUTHORIZED,
            "{digest} HEAD sig used for GET"
        );

        // wrong key
        let wrong_key = Signer::new(b"not-the-key", digest)
            .sign(&Request::new(&get, &path, exp))
            .unwrap()
            .to_url(&ep);
        assert_eq!(
            fetch(http, &wrong_key).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} wrong key"
        );

        // an ip range that excludes us, and a signed range that was widened or removed
        let mut req = Request::new(&get, &path, exp);
        req.ip_range = Some("192.0.2.0/24");
        let excluded = signer.sign(&req).unwrap().to_url(&ep);
        assert_eq!(
            fetch(http, &excluded).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} excluded ip range"
        );
        let widened = excluded.replace("192.0.2.0/24", "0.0.0.0/0");
        assert_eq!(
            fetch(http, &widened).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} widened ip range"
        );
        let removed = excluded.replace("&temp_url_ip_range=192.0.2.0/24", "");
        assert_eq!(
            fetch(http, &removed).await.0,
            StatusCode::UNAUTHORIZED,
            "{digest} ip range removed"
        );
    }
    // a container key does not open another container
    let other_container = unique("it-tempurl-other");
    fx.account.put_container(&other_container, &[]).await;
    fx.account
        .put_object(&other_container, "o", b"x".to_vec())
        .await;
    let foreign = format!("{}/{other_container}/o", fx.account.path);
    let url = Signer::new(fx.container_keys[0].as_bytes(), Digest::Sha256)
        .sign(&Request::new(&get, &foreign, exp))
        .unwrap()
        .to_url(&ep);
    assert_eq!(
        fetch(http, &url).await.0,
        StatusCode::UNAUTHORIZED,
        "container key on another container"
    );
}

#[tokio::test]
async fn key_rotation_through_the_second_key_slot() {
    // AUTH_test2 is used only by this test, so changing its keys disturbs nobody.
    let account = Account::test2().await;
    let container = unique("it-rotation");
    account.put_container(&container, &[]).await;
    account
        .put_object(&container, "kernel", b"vmlinuz".to_vec())
        .await;
    let path = format!("{}/{container}/kernel", account.path);
    let ep = endpoint();
    let get = Method::get();
    let url_with = |key: &str| {
        Signer::new(key.as_bytes(), Digest::Sha256)
            .sign(&Request::new(&get, &path, now() + 600))
            .unwrap()
            .to_url(&ep)
    };
    let old = unique("old");
    let new = unique("new");

    account
        .post_account(&[
            ("X-Account-Meta-Temp-URL-Key", &old),
            ("X-Account-Meta-Temp-URL-Key-2", ""),
        ])
        .await;
    let old_url = url_with(&old);
    assert_eq!(
        fetch(&account.http, &old_url).await.0,
        StatusCode::OK,
        "before rotation"
    );

    // step 1: the old key moves to slot 2, the new key takes slot 1; both work
    account
        .post_account(&[
            ("X-Account-Meta-Temp-URL-Key", &new),
            ("X-Account-Meta-Temp-URL-Key-2", &old),
        ])
        .await;
    let new_url = url_with(&new);
    assert_eq!(
        fetch(&account.http, &old_url).await.0,
        StatusCode::OK,
        "old key during rotation"
    );
    assert_eq!(
        fetch(&account.http, &new_url).await.0,
        StatusCode::OK,
        "new key during rotation"
    );

    // step 2: the old key is removed; URLs signed with it stop working at once
    account
        .post_account(&[("X-Account-Meta-Temp-URL-Key-2", "")])
        .await;
    assert_eq!(
        fetch(&account.http, &old_url).await.0,
        StatusCode::UNAUTHORIZED,
        "old key after rotation"
    );
    assert_eq!(
        fetch(&account.http, &new_url).await.0,
        StatusCode::OK,
        "new key after rotation"
    );

    // container keys rotate the same way
    let ck = unique("ck");
    account
        .post_container(&container, &[("X-Container-Meta-Temp-URL-Key-2", &ck)])
        .await;
    assert_eq!(
        fetch(&account.http, &url_with(&ck)).await.0,
        StatusCode::OK,
        "container key 2"
    );
    account
        .post_container(&container, &[("X-Container-Meta-Temp-URL-Key-2", "")])
        .await;
    assert_eq!(
        fetch(&account.http, &url_with(&ck)).await.0,
        StatusCode::UNAUTHORIZED,
        "container key 2 removed"
    );
}

#[tokio::test]
async fn the_cli_prints_urls_that_swift_accepts() {
    let fx = fixture().await;
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), format!("{}\n", fx.account_keys[1])).unwrap();
    let name = "dir/sub dir/ä?&#%+ ${x}.txt";
    let path = fx.object_path(name);
    for digest in ["sha1", "sha256", "sha512"] {
        // the absolute, encoded form for scripts
        let out = std::process::Command::new(crate::support::ironboot_bin())
            .args(["tempurl", "--digest", digest, "--key-file"])
            .arg(key_file.path())
            .args(["--endpoint", &proxy_url(), "GET", "5m", &path])
            .env_remove("IRONBOOT_TEMP_URL_KEY")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = String::from_utf8(out.stdout).unwrap();
        let (s, body, h) = fetch(&fx.account.http, url.trim()).await;
        assert_eq!((s, h), (StatusCode::OK, StatusCode::OK), "{digest}: {url}");
        assert_eq!(body, body_for(name));
    }
    // the key from the environment, the swiftclient form of a URL-safe name
    let out = std::process::Command::new(crate::support::ironboot_bin())
        .args(["tempurl", "--iso8601", "HEAD", "1h"])
        .arg(format!("{}{}", proxy_url(), fx.object_path("plain.img")))
        .env("IRONBOOT_TEMP_URL_KEY", &fx.container_keys[0])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8(out.stdout).unwrap();
    assert!(url.contains("&temp_url_expires=20"), "{url}");
    assert_eq!(
        status(&fx.account.http, reqwest::Method::HEAD, url.trim()).await,
        StatusCode::OK,
        "{url}"
    );
}

/// Signed `/info` (Swift's admin info, `admin_key` in the proxy). Swift checks these with
/// sha1 only, although swiftclient defaults to sha256; the CLI warns about that.
#[tokio::test]
async fn signed_info_requests_follow_swift() {
    let key = crate::support::required_env("SWIFT_AIO_INFO_ADMIN_KEY");
    let ep = endpoint();
    let http = reqwest::Client::new();
    let get = Method::get();
    let info = |digest: Digest, expires: i64, key: &str| {
        let signer = Signer::new(key.as_bytes(), digest);
        let url = signer
            .sign(&Request::new(&get, "/info", expires))
            .unwrap()
            .to_url(&ep);
        assert!(
            url.contains("/info?swiftinfo_sig=") && url.contains("&swiftinfo_expires="),
            "{url}"
        );
        url
    };
    let resp = http
        .get(info(Digest::Sha1, now() + 60, &key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body.get("admin").is_some(),
        "a valid signature gets the admin section: {body}"
    );
    assert_eq!(
        status(
            &http,
            reqwest::Method::HEAD,
            &info(Digest::Sha1, now() + 60, &key)
        )
        .await,
        StatusCode::OK
    );
    for (label, url) in [
        ("sha256", info(Digest::Sha256, now() + 60, &key)),
        ("expired", info(Digest::Sha1, now() - 1, &key)),
        (
            "wrong key",
            info(Digest::Sha1, now() + 60, "not-the-admin-key"),
        ),
    ] {
        assert_eq!(
            status(&http, reqwest::Method::GET, &url).await,
            StatusCode::UNAUTHORIZED,
            "{label}"
        );
    }
    let out = std::process::Command::new(crate::support::ironboot_bin())
        .args(["tempurl", "GET", "60", "/info", "k"])
        .env_remove("IRONBOOT_TEMP_URL_KEY")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("checks /info signatures with sha1 only")
    );
}
