//! Unit tests of the TempURL engine. The expected strings were produced by
//! python-swiftclient 4.11's `generate_temp_url(..., absolute=True)`; the integration tests
//! compare against it live on a thousand random inputs and against a real Swift.

use super::*;

const EXP: i64 = 1_795_694_400; // 2026-11-26T12:00:00Z

fn form(
    key: &str,
    digest: Digest,
    method: &str,
    path: &str,
    f: impl FnOnce(&mut Request<'_>),
) -> String {
    let method = Method::parse(method).unwrap();
    let mut req = Request::new(&method, path, EXP);
    f(&mut req);
    Signer::new(key.as_bytes(), digest)
        .sign(&req)
        .unwrap()
        .swiftclient_form()
}

#[test]
fn matches_swiftclient_vectors() {
    let none = |_: &mut Request<'_>| {};
    assert_eq!(
        form("secret", Digest::Sha256, "GET", "/v1/AUTH_test/c/o", none),
        "/v1/AUTH_test/c/o?temp_url_sig=28ab1d8841beb2ee68a7e952d5738d550e8f1bed82b947acbe4620689d7fb4ae&temp_url_expires=1795694400"
    );
    assert_eq!(
        form("secret", Digest::Sha1, "get", "/v1/AUTH_test/c/o", none),
        "/v1/AUTH_test/c/o?temp_url_sig=99ceedd2d72ef61332acae574113105a83af12cb&temp_url_expires=1795694400"
    );
    assert_eq!(
        form("secret", Digest::Sha512, "HEAD", "/v1/AUTH_test/c/o", none),
        "/v1/AUTH_test/c/o?temp_url_sig=sha512:sWevLW0Iw65Kz9MjNQPzpLAPHKSN0eAWE5RHo1VdMmJLwGe0KKXG-5FkWJgrT3Ut_nnVl9_bILwtSu0F6qz1FQ&temp_url_expires=1795694400"
    );
    assert_eq!(
        form(
            "k€y",
            Digest::Sha256,
            "PUT",
            "/v1/AUTH_test/c/naïve file ?&#%+.txt",
            none
        ),
        "/v1/AUTH_test/c/naïve file ?&#%+.txt?temp_url_sig=741cda5dd4be83d3fb9ba4b911c87a61bb02aa90668f6c3debdab0f57882c5ad&temp_url_expires=1795694400"
    );
    assert_eq!(
        form(
            "secret",
            Digest::Sha256,
            "GET",
            "/v1/AUTH_test/c/pre",
            |r| r.prefix = true
        ),
        "/v1/AUTH_test/c/pre?temp_url_sig=1f669cfa211ff35233654ef516db4c6c5385cbe490654c9589b162010323cd3c&temp_url_expires=1795694400&temp_url_prefix=pre"
    );
    assert_eq!(
        form("secret", Digest::Sha512, "GET", "/v1/AUTH_test/c/", |r| r
            .prefix =
            true),
        "/v1/AUTH_test/c/?temp_url_sig=sha512:nx_Qgd5jiS0aMf_H6ZrqrHgwMC6i2V3SLWsZ8JaIMB76EIvk4ogeBVzdH8eaGp4YGsCxre9D7rqg7S1YYl582w&temp_url_expires=1795694400&temp_url_prefix="
    );
    assert_eq!(
        form("secret", Digest::Sha256, "GET", "/v1/AUTH_test/c/o", |r| {
            r.ip_range = Some("127.0.0.0/8")
        }),
        "/v1/AUTH_test/c/o?temp_url_sig=03a6e2f2a6be61ae41046d9a5c60124fd651fef48fa5ab02d215117edd803f37&temp_url_expires=1795694400&temp_url_ip_range=127.0.0.0/8"
    );
    assert_eq!(
        form(
            "secret",
            Digest::Sha1,
            "DELETE",
            "/v1/AUTH_test/c/o/deep",
            |r| {
                r.iso8601 = true;
                r.ip_range = Some("::1");
            }
        ),
        "/v1/AUTH_test/c/o/deep?temp_url_sig=85d342386bbb7001694603bb50507fc1fd2ebcfd&temp_url_expires=2026-11-26T12:00:00Z&temp_url_ip_range=::1"
    );
    // /info ignores prefix and ip range and uses the swiftinfo_ parameters
    assert_eq!(
        form("admin", Digest::Sha256, "GET", "/info", |r| {
            r.prefix = true;
            r.ip_range = Some("1.2.3.4");
        }),
        "/info?swiftinfo_sig=1377963ef36bcae41efbbe4963b598334449e458dadb1376a7398aecd47763c4&swiftinfo_expires=1795694400"
    );
}

#[test]
fn empty_ip_range_is_ignored_like_swiftclient() {
    let with_empty = form("secret", Digest::Sha256, "GET", "/v1/AUTH_test/c/o", |r| {
        r.ip_range = Some("")
    });
    let without = form("secret", Digest::Sha256, "GET", "/v1/AUTH_test/c/o", |_| {});
    assert_eq!(with_empty, without);
}

#[test]
fn path_validation_follows_swiftclient() {
    let m = Method::get();
    let s = Signer::new(b"k", Digest::Sha256);
    let sign = |path: &str, prefix: bool| {
        let mut r = Request::new(&m, path, EXP);
        r.prefix = prefix;
        s.sign(&r).map(|u| u.swiftclient_form())
    };
    for bad in [
        "",
        "/",
        "v1/a/c/o",
        "/v1/a/c",
        "/v1/a/c/",
        "//a/c/o",
        "/v1//c/o",
        "/v1/a//o",
        "http://h/v1/a/c/o",
        "/info/",
    ] {
        assert_eq!(
            sign(bad, false),
            Err(TempUrlError::ObjectPath(bad.into())),
            "{bad:?}"
        );
    }
    for bad in ["/v1/a/c", "/v1/a", "/v1//c/", "x/v1/a/c/"] {
        assert_eq!(
            sign(bad, true),
            Err(TempUrlError::PrefixPath(bad.into())),
            "{bad:?}"
        );
    }
    // swiftclient only checks the shape: any version string and nested objects pass
    assert!(sign("/v2/a/c/o", false).is_ok());
    assert!(sign("/v1/a/c/o/", false).is_ok());
    assert!(sign("/v1/a/c/", true).is_ok());
}

#[test]
fn absolute_url_encodes_the_path_but_signs_it_raw() {
    let m = Method::get();
    let s = Signer::new(b"secret", Digest::Sha256);
    let path = "/v1/AUTH_test/c/naïve file ?&#%+${x}.txt";
    let mut req = Request::new(&m, path, EXP);
    req.ip_range = Some("10.0.0.0/8");
    let url = s.sign(&req).unwrap();
    let ep = Endpoint::parse("http://10.0.2.2:28080/").unwrap();
    let abs = url.to_url(&ep);
    assert_eq!(
        abs,
        format!(
            "http://10.0.2.2:28080/v1/AUTH_test/c/na%C3%AFve%20file%20%3F%26%23%25%2B%24%7Bx%7D.txt?temp_url_sig={}&temp_url_expires={EXP}&temp_url_ip_range=10.0.0.0/8",
            url.signature()
        )
    );
    assert_eq!(
        url.signature(),
        s.signature(&m, EXP, path, false, Some("10.0.0.0/8"))
    );
    // the hot path produces the same bytes
    let mut hot = String::new();
    s.write_get_url(&mut hot, &ep, path, EXP, Some("10.0.0.0/8"))
        .unwrap();
    assert_eq!(hot, abs);
}

#[test]
fn prefix_and_filename_are_encoded_in_the_absolute_form() {
    let m = Method::get();
    let s = Signer::new(b"secret", Digest::Sha256);
    let mut req = Request::new(&m, "/v1/a/c/my dir/&x", EXP);
    req.prefix = true;
    req.filename = Some("My Test+File.pdf");
    req.inline = true;
    let url = s.sign(&req).unwrap();
    let ep = Endpoint::parse("https://swift.example.com").unwrap();
    let abs = url.to_url(&ep);
    assert!(
        abs.starts_with("https://swift.example.com/v1/a/c/my%20dir/%26x?temp_url_sig="),
        "{abs}"
    );
    assert!(
        abs.ends_with("&temp_url_prefix=my%20dir/%26x&filename=My%20Test%2BFile.pdf&inline"),
        "{abs}"
    );
    assert!(
        url.swiftclient_form()
            .contains("&temp_url_prefix=my dir/&x&filename=My%20Test%2BFile.pdf&inline")
    );
    assert_eq!(
        url.signature(),
        s.signature(&m, EXP, "/v1/a/c/my dir/&x", true, None)
    );
}

#[test]
fn digests_and_methods_parse_strictly() {
    assert_eq!("sha512".parse::<Digest>(), Ok(Digest::Sha512));
    assert!("SHA256".parse::<Digest>().is_err());
    assert!("md5".parse::<Digest>().is_err());
    assert_eq!(Method::parse("delete").unwrap().as_str(), "DELETE");
    assert!(Method::parse("GET").unwrap().is_standard());
    assert!(!Method::parse("PATCH").unwrap().is_standard());
    assert!(Method::parse("").is_err());
    assert!(Method::parse("G T").is_err());
    assert!(Method::parse("GÉT").is_err());
}

#[test]
fn ip_ranges_are_strict_like_ip_network() {
    for ok in [
        "127.0.0.1",
        "127.0.0.1/32",
        "127.0.0.0/8",
        "::1",
        "fd00::/8",
        "0.0.0.0/0",
    ] {
        assert!(validate_ip_range(ok).is_ok(), "{ok}");
    }
    for bad in [
        "127.0.0.1/8",
        "10.0.0.1/24",
        "",
        "localhost",
        "1.2.3.4/33",
        "fd00::1/8",
    ] {
        assert!(validate_ip_range(bad).is_err(), "{bad}");
    }
}

#[test]
fn endpoints_are_checked() {
    assert_eq!(
        Endpoint::parse("http://h:8080/").unwrap().as_str(),
        "http://h:8080"
    );
    assert_eq!(
        Endpoint::parse("https://rgw/swift").unwrap().as_str(),
        "https://rgw/swift"
    );
    for bad in [
        "ftp://h",
        "h:8080",
        "http://",
        "http:///x",
        "http://h/?a",
        "http://h/#f",
        "http://h /x",
        "http://u:p@h",
    ] {
        assert!(Endpoint::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_output_never_shows_key_or_signature() {
    let s = Signer::new(b"topsecretkey", Digest::Sha256);
    assert!(!format!("{s:?}").contains("topsecret"));
    let m = Method::get();
    let url = s.sign(&Request::new(&m, "/v1/a/c/o", EXP)).unwrap();
    assert!(!format!("{url:?}").contains(url.signature()));
}

#[test]
fn signature_changes_with_every_signed_field() {
    let m = Method::get();
    let s = Signer::new(b"k", Digest::Sha256);
    let base = s.signature(&m, EXP, "/v1/a/c/o", false, None);
    assert_ne!(
        base,
        s.signature(&Method::head(), EXP, "/v1/a/c/o", false, None)
    );
    assert_ne!(base, s.signature(&m, EXP + 1, "/v1/a/c/o", false, None));
    assert_ne!(base, s.signature(&m, EXP, "/v1/a/c/p", false, None));
    assert_ne!(base, s.signature(&m, EXP, "/v1/a/c/o", true, None));
    assert_ne!(
        base,
        s.signature(&m, EXP, "/v1/a/c/o", false, Some("1.2.3.4"))
    );
    assert_ne!(
        base,
        Signer::new(b"k2", Digest::Sha256).signature(&m, EXP, "/v1/a/c/o", false, None)
    );
}
