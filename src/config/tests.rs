use std::io::Write as _;
use std::path::Path;

use super::*;
use crate::tempurl::Digest;

fn ok(text: &str) -> Loaded {
    from_str(text, Some(Path::new("ironboot.conf"))).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<String> {
    match from_str(text, Some(Path::new("ironboot.conf"))) {
        Ok(_) => panic!("expected errors for {text:?}"),
        Err(e) => e.0.iter().map(ToString::to_string).collect(),
    }
}

const SWIFT: &str = "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = http://127.0.0.1:8080\n\
                     swift_account = AUTH_test\nswift_temp_url_key = s3cr3t-key\n";

#[test]
fn no_file_means_defaults() {
    let l = ok("");
    let o = &l.settings.options;
    assert!(!o.ipxe.use_swift);
    assert_eq!(o.glance.swift_temp_url_duration, 1200);
    assert_eq!(o.glance.swift_temp_url_expected_download_start_delay, 0);
    assert_eq!(o.glance.swift_temp_url_digest, Digest::Sha256);
    assert_eq!(o.glance.swift_api_version, "v1");
    assert_eq!(o.glance.swift_account_prefix, "AUTH");
    assert_eq!(o.glance.swift_container, "glance");
    assert_eq!(o.glance.swift_store_multiple_containers_seed, 0);
    assert_eq!(o.pxe.kernel_append_params, "nofb vga=normal");
    assert_eq!(o.api.port, 6385);
    assert_eq!(o.httpboot.port, 8080);
    assert!(o.api.host_ip.is_loopback() && o.httpboot.host_ip.is_loopback());
    assert_eq!(o.deploy.http_root, o.default.state_path.join("httpboot"));
    assert_eq!(
        l.settings.database,
        DatabaseUrl::Sqlite(o.default.state_path.join("ironboot.sqlite"))
    );
    assert!(l.settings.swift.is_none());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn swift_mode_derives_typed_settings() {
    let l = ok(SWIFT);
    let s = l.settings.swift.unwrap();
    assert_eq!(s.public_endpoint.as_str(), "http://127.0.0.1:8080");
    assert_eq!(s.internal_endpoint, s.public_endpoint);
    assert_eq!(s.key.as_ref().unwrap().expose(), "s3cr3t-key");
    assert_eq!(s.configured_account.as_deref(), Some("AUTH_test"));
    assert_eq!(s.account_prefix, "AUTH_");
    assert!(s.discovery.is_none());
}

#[test]
fn internal_endpoint_and_catalog_style_endpoints() {
    let l = ok(&format!(
        "{SWIFT}swift_internal_endpoint_url = http://10.1.0.5:8080/v1/AUTH_test/\n\
         [DEFAULT]\nstate_path = /tmp/x\n"
    )
    .replace("http://127.0.0.1:8080", "http://10.0.2.2:8080/v1/AUTH_test"));
    let s = l.settings.swift.unwrap();
    assert_eq!(s.public_endpoint.as_str(), "http://10.0.2.2:8080");
    assert_eq!(s.internal_endpoint.as_str(), "http://10.1.0.5:8080");
}

#[test]
fn use_swift_requires_endpoint_account_and_key() {
    let errs = errors("[ipxe]\nuse_swift = true\n");
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.iter().any(
            |e| e.contains("glance.swift_endpoint_url: is required when ipxe.use_swift = true")
        )
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("glance.swift_account: is required"))
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("glance.swift_temp_url_key: is required"))
    );
}

#[test]
fn deprecated_ironic_name_is_accepted_with_a_warning() {
    let l = ok(&SWIFT.replace(
        "[ipxe]\nuse_swift = true\n",
        "[pxe]\nipxe_use_swift = True\n",
    ));
    assert!(l.settings.options.ipxe.use_swift);
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("[pxe] ipxe_use_swift is deprecated; use [ipxe] use_swift")),
        "{:?}",
        l.warnings
    );
    // same value in both places: fine
    let l = ok(&format!("{SWIFT}[pxe]\nipxe_use_swift = yes\n"));
    assert!(l.settings.options.ipxe.use_swift);
}

#[test]
fn conflicting_new_and_deprecated_names_are_an_error() {
    let errs = errors("[ipxe]\nuse_swift = false\n[pxe]\nipxe_use_swift = true\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("ironboot.conf:2: ipxe.use_swift: conflicts with its deprecated name pxe.ipxe_use_swift (line 4)"), "{}", errs[0]);
}

#[test]
fn bad_values_name_file_line_option_value_and_fix() {
    let errs = errors("[glance]\n\nswift_store_multiple_containers_seed = 33\n");
    assert_eq!(
        errs,
        vec![
            "ironboot.conf:3: glance.swift_store_multiple_containers_seed: invalid value \"33\": must be between 0 and 32 \
              (0 = single container); it must match Glance's setting"
        ]
    );
    let errs = errors("[ipxe]\nuse_swift = sometimes\n");
    assert_eq!(
        errs,
        vec![
            "ironboot.conf:2: ipxe.use_swift: invalid value \"sometimes\": expected a boolean: true/false, yes/no, on/off or 1/0"
        ]
    );
    let errs = errors("[glance]\nswift_temp_url_digest = md5\n");
    assert!(errs[0].contains(
        "glance.swift_temp_url_digest: invalid value \"md5\": expected one of sha1, sha256, sha512"
    ));
    let errs = errors("[api]\nport = 0\n");
    assert!(errs[0].contains("api.port: invalid value \"0\": must be a TCP port"));
    let errs = errors("[glance]\nswift_temp_url_ip_range = 10.0.0.1/8\n");
    assert!(
        errs[0].contains("glance.swift_temp_url_ip_range") && errs[0].contains("10.0.0.0/8"),
        "{}",
        errs[0]
    );
}

#[test]
fn duration_must_cover_the_start_delay() {
    let errs = errors(
        "[glance]\nswift_temp_url_duration = 15\nswift_temp_url_expected_download_start_delay = 1000\n",
    );
    assert_eq!(errs.len(), 1);
    assert!(errs[0].starts_with("ironboot.conf:2: glance.swift_temp_url_duration: 15 is less than glance.swift_temp_url_expected_download_start_delay (1000)"), "{}", errs[0]);
    // the delay's line when only the delay is set
    let errs = errors("[glance]\n\nswift_temp_url_expected_download_start_delay = 1201\n");
    assert!(
        errs[0].starts_with("ironboot.conf:3: glance.swift_temp_url_duration: 1200 is less"),
        "{}",
        errs[0]
    );
    ok(
        "[glance]\nswift_temp_url_duration = 1000\nswift_temp_url_expected_download_start_delay = 1000\n",
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let errs = errors(
        "[glance]\nswift_temp_url_duration = x\nswift_store_multiple_containers_seed = -1\n[api]\nport = 99999\n",
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
}

#[test]
fn key_file_is_read_and_conflicts_with_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::File::create(&key)
        .unwrap()
        .write_all(b"from-file\n")
        .unwrap();
    let text = SWIFT.replace(
        "swift_temp_url_key = s3cr3t-key\n",
        &format!("swift_temp_url_key_file = {}\n", key.display()),
    );
    assert_eq!(
        ok(&text).settings.swift.unwrap().key.unwrap().expose(),
        "from-file"
    );

    let both = format!("{SWIFT}swift_temp_url_key_file = {}\n", key.display());
    let errs = errors(&both);
    assert!(errs.iter().any(|e| e.contains(
        "glance.swift_temp_url_key_file: is set together with glance.swift_temp_url_key"
    )));

    let missing = SWIFT.replace(
        "swift_temp_url_key = s3cr3t-key\n",
        "swift_temp_url_key_file = /nonexistent/key\n",
    );
    let errs = errors(&missing);
    assert!(
        errs.iter().any(|e| e.starts_with(
            "ironboot.conf:6: glance.swift_temp_url_key_file: cannot read /nonexistent/key"
        )),
        "{errs:?}"
    );

    std::fs::write(&key, "").unwrap();
    let errs = errors(&text);
    assert!(errs.iter().any(|e| e.contains("is empty")), "{errs:?}");
}

#[test]
fn unknown_names_warn_with_suggestions() {
    let l = ok(
        "[glance]\nswift_temp_url_duraton = 5\n[glnce]\nx = 1\n[agent]\nfoo = 1\n[ipxe]\nUSE_SWIFT = false\n",
    );
    let w = l.warnings.join("\n");
    assert!(w.contains("ironboot.conf:2: unknown option [glance] swift_temp_url_duraton is ignored; did you mean swift_temp_url_duration?"), "{w}");
    assert!(
        w.contains("ironboot.conf:3: unknown section [glnce] is ignored; did you mean [glance]?"),
        "{w}"
    );
    assert!(
        w.contains("unknown section [agent] is ignored\n")
            || w.ends_with("unknown section [agent] is ignored"),
        "{w}"
    );
    assert!(
        w.contains("unknown option [ipxe] USE_SWIFT is ignored; did you mean use_swift?"),
        "{w}"
    );
    // a warning is not an error: the known option kept its default
    assert_eq!(l.settings.options.glance.swift_temp_url_duration, 1200);
}

#[test]
fn interpolation_follows_oslo() {
    let l = ok(
        "[DEFAULT]\nstate_path = /srv/ib\n[deploy]\nhttp_root = ${state_path}/www\n[database]\nconnection = sqlite:///$state_path/db.sqlite\n",
    );
    assert_eq!(
        l.settings.options.deploy.http_root,
        Path::new("/srv/ib/www")
    );
    assert_eq!(
        l.settings.database,
        DatabaseUrl::Sqlite("/srv/ib/db.sqlite".into())
    );
    let l = ok("[glance]\nswift_temp_url_key = a$$b\n");
    assert_eq!(
        l.settings
            .options
            .glance
            .swift_temp_url_key
            .as_ref()
            .unwrap()
            .expose(),
        "a$b"
    );
    let errs = errors("[deploy]\nhttp_root = $nosuch/x\n");
    assert!(
        errs[0].contains("deploy.http_root: $nosuch does not name a [DEFAULT] option"),
        "{}",
        errs[0]
    );
}

#[test]
fn secrets_never_appear_in_errors_check_output_or_debug() {
    let l = ok(&format!(
        "{SWIFT}[database]\nconnection = postgresql+psycopg2://ironic:pgpass@127.0.0.1/ironic\n"
    ));
    let rendered = render_effective(&l.settings);
    assert!(
        rendered.contains("swift_temp_url_key = <redacted>"),
        "{rendered}"
    );
    assert!(
        rendered.contains("connection = postgres://ironic:<redacted>@127.0.0.1/ironic"),
        "{rendered}"
    );
    assert!(!rendered.contains("s3cr3t") && !rendered.contains("pgpass"));
    let debug = format!("{:?}", l.settings);
    assert!(
        !debug.contains("s3cr3t") && !debug.contains("pgpass"),
        "{debug}"
    );
    assert_eq!(
        l.settings.database,
        DatabaseUrl::Postgres(Secret::new("postgres://ironic:pgpass@127.0.0.1/ironic"))
    );

    // a conflict on a secret does not show either value
    let errs = errors("[glance]\nswift_temp_url_key = one-secret\nswift_temp_url_key_file = /x\n");
    assert!(errs.iter().all(|e| !e.contains("one-secret")));
}

#[test]
fn database_urls() {
    assert_eq!(
        DatabaseUrl::parse("sqlite:////var/lib/ib.sqlite"),
        Ok(DatabaseUrl::Sqlite("/var/lib/ib.sqlite".into()))
    );
    assert!(
        DatabaseUrl::parse("mysql+pymysql://u:p@h/db")
            .unwrap_err()
            .contains("MySQL is not supported")
    );
    assert!(DatabaseUrl::parse("sqlite://").is_err());
    assert!(DatabaseUrl::parse("nonsense").is_err());
    assert_eq!(
        validate::redact_url_password("postgres://h/db?user=u&password=p"),
        "postgres://h/db?user=u&password=<redacted>"
    );
    assert_eq!(
        validate::redact_url_password("postgres://u@h/db"),
        "postgres://u@h/db"
    );
}

#[test]
fn noauth_is_refused_off_loopback_unless_allowed() {
    let errs = errors("[api]\nhost_ip = 0.0.0.0\n");
    assert!(
        errs[0].starts_with(
            "ironboot.conf:2: api.auth_strategy: noauth on the non-loopback address 0.0.0.0"
        ),
        "{}",
        errs[0]
    );
    let l = ok("[api]\nhost_ip = 0.0.0.0\nallow_insecure_noauth = true\n");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("anyone who reaches this address"))
    );
}

#[test]
fn token_auth_reads_the_token_file() {
    let errs = errors("[api]\nauth_strategy = token\n");
    assert!(errs[0].contains("api.token_file: is required when api.auth_strategy = token"));
    let dir = tempfile::tempdir().unwrap();
    let tok = dir.path().join("token");
    std::fs::write(&tok, "tok-123\n").unwrap();
    let l = ok(&format!(
        "[api]\nauth_strategy = token\ntoken_file = {}\nhost_ip = 0.0.0.0\n",
        tok.display()
    ));
    assert_eq!(l.settings.api_token.unwrap().expose(), "tok-123");
}

#[test]
fn the_two_listeners_need_different_ports() {
    let errs = errors("[httpboot]\nport = 6385\n");
    assert!(errs[0].contains("httpboot.port: 6385 is also api.port"));
}

#[test]
fn syntax_errors_are_config_errors_with_a_line() {
    let err = from_str(
        "[ipxe]\nuse_swift\n",
        Some(Path::new("/etc/ironboot/ironboot.conf")),
    )
    .unwrap_err();
    assert_eq!(
        err.0[0].to_string(),
        "/etc/ironboot/ironboot.conf:2: expected 'name = value', got \"use_swift\""
    );
}

#[test]
fn load_reads_an_explicit_file_and_reports_missing_ones() {
    let err = load(Some(Path::new("/nonexistent/ironboot.conf"))).unwrap_err();
    assert!(
        err.to_string()
            .contains("/nonexistent/ironboot.conf: cannot read the configuration file")
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ironboot.conf");
    std::fs::write(&path, "[glance]\nswift_container = images\n").unwrap();
    assert_eq!(
        load(Some(&path))
            .unwrap()
            .settings
            .options
            .glance
            .swift_container,
        "images"
    );
}

#[test]
fn every_default_is_valid_and_the_sample_round_trips() {
    // Uncommenting every option of the sample must give the defaults back.
    let sample = sample();
    let mut uncommented = String::new();
    for line in sample.lines() {
        let is_option = line.starts_with('#')
            && !line.starts_with("# ")
            && line.contains(" =")
            && line.len() > 1;
        if is_option
            && !line.ends_with(" =")
            && !line.starts_with("#state_path")
            && !line.starts_with("#host ")
        {
            uncommented.push_str(&line[1..]);
        } else {
            uncommented.push_str(line);
        }
        uncommented.push('\n');
    }
    let from_sample = ok(&uncommented);
    let defaults = ok("");
    assert_eq!(
        from_sample.settings.options.effective(),
        defaults.settings.options.effective()
    );
    assert!(
        from_sample.warnings.is_empty(),
        "{:?}",
        from_sample.warnings
    );
    for spec in option_specs() {
        assert!(
            sample.contains(&format!("\n#{} =", spec.name)),
            "{} missing from the sample",
            spec.key()
        );
    }
}

#[test]
fn sample_matches_golden_file() {
    expect_test::expect_file!["../../tests/golden/config-sample.conf"].assert_eq(&sample());
}

#[test]
fn new_options_have_their_defaults() {
    let o = ok("").settings.options;
    assert_eq!(o.default.graceful_shutdown_timeout, 60);
    assert_eq!(o.api.header_timeout, 10);
    assert_eq!(o.api.keepalive_timeout, 60);
    assert_eq!(o.api.request_timeout, 60);
    assert_eq!(o.api.max_connections, 0);
    assert_eq!(o.api.max_limit, 1000);
    assert_eq!(o.api.max_document_size, 65536);
    assert_eq!(o.api.max_body_size, 1_048_576);
    assert_eq!(o.httpboot.header_timeout, 30);
    assert_eq!(o.httpboot.keepalive_timeout, 75);
    assert_eq!(o.httpboot.max_connections, 0);
    assert_eq!(o.swift.temp_url_key_refresh_interval, 60);
    assert_eq!(o.swift.timeout, 10);
    assert!(o.swift.auth_type.is_none());
}

/// Every integer option, with the lowest and highest value it takes. A new integer option
/// that is not listed here fails the test: give it a range.
const RANGES: &[(&str, &str, u64, u64)] = &[
    ("DEFAULT", "graceful_shutdown_timeout", 1, 3600),
    ("ipxe", "download_attempts", 1, 50),
    ("ipxe", "retry_max_delay", 1, 600),
    ("pxe", "ipxe_timeout", 0, 3600),
    ("pxe", "image_cache_size", 1, 16_777_216),
    ("pxe", "image_cache_ttl", 1, 5_256_000),
    ("glance", "swift_temp_url_duration", 1, 315_360_000),
    (
        "glance",
        "swift_temp_url_expected_download_start_delay",
        0,
        315_360_000,
    ),
    ("glance", "swift_store_multiple_containers_seed", 0, 32),
    ("glance", "timeout", 1, 600),
    ("glance", "num_retries", 0, 10),
    ("glance", "metadata_cache_ttl", 0, 3600),
    ("swift", "timeout", 1, 600),
    ("swift", "temp_url_key_refresh_interval", 10, 86400),
    ("conductor", "cache_clean_up_interval", 0, 86400),
    ("conductor", "heartbeat_interval", 1, 600),
    ("conductor", "heartbeat_timeout", 2, 3600),
    ("conductor", "index_resync_interval", 1, 86400),
    ("database", "max_pool_size", 1, 1000),
    ("api", "port", 1, 65535),
    ("api", "header_timeout", 1, 3600),
    ("api", "keepalive_timeout", 1, 3600),
    ("api", "request_timeout", 1, 3600),
    ("api", "max_connections", 0, 1 << 20),
    ("api", "max_limit", 1, 100_000),
    ("api", "max_document_size", 1024, 64 << 20),
    ("api", "max_body_size", 1024, 64 << 20),
    ("httpboot", "port", 1, 65535),
    ("httpboot", "header_timeout", 1, 3600),
    ("httpboot", "keepalive_timeout", 1, 3600),
    ("httpboot", "max_connections", 0, 1 << 20),
];

#[test]
fn every_integer_option_is_range_checked() {
    for spec in option_specs()
        .iter()
        .filter(|s| s.type_name == "integer value")
    {
        assert!(
            RANGES
                .iter()
                .any(|(s, n, _, _)| (*s, *n) == (spec.section, spec.name)),
            "{} is an integer option without an entry in RANGES: give it a range check",
            spec.key()
        );
    }
    // ports differ from each other so that the listeners do not collide
    let ports = "[api]\nport = 6385\n[httpboot]\nport = 8080\n";
    for &(section, name, min, max) in RANGES {
        let key = format!("{section}.{name}");
        // the bounds are accepted (the document size stays below the body size)...
        for good in [min, max] {
            let extra = match (section, name) {
                ("api", "max_document_size") => "max_body_size = 67108864\n",
                ("api", "max_body_size") => "max_document_size = 1024\n",
                ("glance", "swift_temp_url_expected_download_start_delay") => {
                    "swift_temp_url_duration = 315360000\n"
                }
                ("api" | "httpboot", "port") => "",
                ("conductor", "heartbeat_interval") => "heartbeat_timeout = 3600\n",
                ("conductor", "heartbeat_timeout") => "heartbeat_interval = 1\n",
                _ => "",
            };
            let text = if name == "port" {
                format!("[{section}]\n{name} = {good}\n")
            } else {
                format!("{ports}[{section}]\n{name} = {good}\n{extra}")
            };
            if let Err(e) = from_str(&text, Some(Path::new("ironboot.conf"))) {
                panic!("{key} = {good} refused: {e}");
            }
        }
        // ...and the values just outside them are refused with file:line and the range
        let mut bad = vec![max + 1, u64::MAX];
        if min > 0 {
            bad.push(min - 1);
        }
        for value in bad {
            let errs = errors(&format!("[{section}]\n\n{name} = {value}\n"));
            assert!(
                errs.iter().any(|e| e.starts_with(&format!(
                    "ironboot.conf:3: {key}: invalid value \"{value}\": "
                )) && (e.contains(&format!("between {min} and"))
                    || e.contains("expected a whole number")
                    || e.contains("TCP port"))),
                "{key} = {value}: {errs:?}"
            );
        }
    }
}

#[test]
fn regression_huge_temp_url_duration_is_refused_before_it_overflows() {
    // `now + duration` used to overflow for a duration near u64::MAX.
    let errs = errors("[glance]\nswift_temp_url_duration = 18446744073709551615\n");
    assert_eq!(
        errs,
        vec![
            "ironboot.conf:2: glance.swift_temp_url_duration: invalid value \"18446744073709551615\": \
             must be between 1 and 315360000 seconds (10 years)"
        ]
    );
    let errs = errors("[api]\nmax_body_size = 128\n");
    assert_eq!(
        errs,
        vec![
            "ironboot.conf:2: api.max_body_size: invalid value \"128\": must be between 1024 and \
             67108864 bytes (64 MiB)"
        ]
    );
}

#[test]
fn body_size_must_hold_a_document() {
    let errs = errors("[api]\nmax_document_size = 100000\n\nmax_body_size = 99999\n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "ironboot.conf:4: api.max_body_size: 99999 is less than api.max_document_size (100000)"
        ),
        "{}",
        errs[0]
    );
    // only the document size set: its line
    let errs = errors("[api]\nmax_document_size = 2000000\n");
    assert!(
        errs[0].starts_with("ironboot.conf:2: api.max_body_size: 1048576 is less"),
        "{}",
        errs[0]
    );
    ok("[api]\nmax_document_size = 2000000\nmax_body_size = 2000000\n");
}

#[test]
fn regression_fallback_script_route_panics_serve() {
    // `serve` used to build its boot router with a route made of this name: boot.ipxe
    // overlapped the master script's route and panicked, `a{b` and `*x` are route
    // patterns, `:x` too in older routers.
    let uuid = "5f7b3a3e-4a7c-4d1e-9f5e-2b8a6c1d0e9f";
    for name in [
        "boot.ipxe",
        "pxelinux.cfg",
        "a{b",
        "a}b",
        "{mac}",
        ":x",
        "*x",
        "x?y",
        "x%41",
        "a\\b",
        "sub/inspector.ipxe",
        "/inspector.ipxe",
        ".hidden",
        "..",
        "#comment",
        uuid,
        "5f7b3a3e4a7c4d1e9f5e2b8a6c1d0e9f",
        "a\u{7}b",
        "tftp://10.0.0.1/x.ipxe",
        "http://",
        "http://h/x$${y}",
    ] {
        let text = format!("[ipxe]\n\nfallback_script = {name}\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{name:?}: {errs:?}");
        let shown = name.replace("$$", "$");
        assert!(
            errs[0].starts_with(&format!(
                "ironboot.conf:3: ipxe.fallback_script: invalid value {shown:?}: "
            )) && errs[0].contains("name a file in deploy.http_root such as inspector.ipxe"),
            "{name:?}: {}",
            errs[0]
        );
    }
    // the deprecated name is checked the same way, on its own line
    let errs = errors("[pxe]\nipxe_fallback_script = boot.ipxe\n");
    assert!(
        errs[0].starts_with("ironboot.conf:2: pxe.ipxe_fallback_script: invalid value"),
        "{}",
        errs[0]
    );
    for good in [
        "inspector.ipxe",
        "inspector-v2_final.ipxe",
        "boot.ipxe.bak",
        "http://10.0.0.1/inspector.ipxe",
        "https://boot.example.com:8443/a/b.ipxe?x=1&y=2",
    ] {
        let l = ok(&format!("[ipxe]\nfallback_script = {good}\n"));
        assert_eq!(
            l.settings.options.ipxe.fallback_script.as_deref(),
            Some(good)
        );
    }
}

#[test]
fn kernel_append_params_that_would_break_the_script_are_refused() {
    for (value, needle) in [
        ("console=ttyS0 || reboot", "||"),
        ("a && b", "&&"),
        ("a ; b", "; as a separate word"),
        // $$ is the file's spelling of a literal $
        ("root=$${root}", "${"),
        ("quiet #comment", "starting with #"),
        ("a\n  b", "single line"),
    ] {
        let text = format!("[pxe]\n\nkernel_append_params = {value}\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{value:?}: {errs:?}");
        let shown = value.replace("\n  ", "\n").replace("$$", "$");
        assert!(
            errs[0].starts_with(&format!(
                "ironboot.conf:3: pxe.kernel_append_params: invalid value {shown:?}: "
            )) && errs[0].contains(needle),
            "{value:?}: {}",
            errs[0]
        );
    }
    let long = "x".repeat(crate::node::MAX_KERNEL_ARGS + 1);
    assert!(
        errors(&format!("[pxe]\nkernel_append_params = {long}\n"))[0]
            .contains(&crate::node::MAX_KERNEL_ARGS.to_string())
    );
    ok("[pxe]\nkernel_append_params = console=ttyS0,115200n8 a|b a#b ip=dhcp\n");
    ok("[pxe]\nkernel_append_params =\n");
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn templates_are_read_compiled_and_rendered_by_config_check() {
    let dir = tempfile::tempdir().unwrap();
    // defaults: the built-in templates
    let l = ok("");
    assert!(l.settings.templates.boot_script.is_none());
    assert!(l.settings.templates.node_template.is_none());

    // good files: their contents end up in the settings
    let boot = write(
        dir.path(),
        "boot.j2",
        "#!ipxe\n{% if fallback_script %}chain {{ fallback_script }}{% endif %}\n",
    );
    let node = write(dir.path(), "node.j2", crate::ipxe::DEFAULT_NODE_TEMPLATE);
    let l = ok(&format!(
        "[ipxe]\nfallback_script = inspector.ipxe\n[pxe]\nipxe_boot_script = {}\nipxe_config_template = {}\n",
        boot.display(),
        node.display()
    ));
    assert_eq!(
        l.settings.templates.boot_script.as_deref(),
        Some(std::fs::read_to_string(&boot).unwrap().as_str())
    );
    assert_eq!(
        l.settings.templates.node_template.as_deref(),
        Some(crate::ipxe::DEFAULT_NODE_TEMPLATE)
    );

    // a template that does not compile, on its own line
    let broken = write(dir.path(), "broken.j2", "{% if %}");
    for option in ["ipxe_boot_script", "ipxe_config_template"] {
        let errs = errors(&format!("[pxe]\n\n{option} = {}\n", broken.display()));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with(&format!(
                "ironboot.conf:3: pxe.{option}: the template {} does not compile",
                broken.display()
            )) && errs[0].contains("remove the option to use the built-in one"),
            "{}",
            errs[0]
        );
    }
    // a missing file
    let errs = errors("[pxe]\nipxe_config_template = /nonexistent/node.j2\n");
    assert!(
        errs[0].starts_with(
            "ironboot.conf:2: pxe.ipxe_config_template: cannot read the template /nonexistent/node.j2: "
        ),
        "{}",
        errs[0]
    );
    // a node template that compiles but fails on the sample values (undefined variable)
    let undefined = write(dir.path(), "undef.j2", "#!ipxe\n{{ no_such_variable }}\n");
    let errs = errors(&format!(
        "[pxe]\nipxe_config_template = {}\n",
        undefined.display()
    ));
    assert!(
        errs[0].starts_with("ironboot.conf:2: pxe.ipxe_config_template:")
            && errs[0].contains("no_such_variable"),
        "{}",
        errs[0]
    );
    // a master template that renders with the sample fallback but not without one
    let needs_fallback = write(
        dir.path(),
        "needs.j2",
        "#!ipxe\nchain {{ fallback_script[0] }}\n",
    );
    let errs = errors(&format!(
        "[pxe]\n\nipxe_boot_script = {}\n",
        needs_fallback.display()
    ));
    assert!(
        errs[0].starts_with("ironboot.conf:3: pxe.ipxe_boot_script:")
            && errs[0].contains("ipxe.fallback_script = <None>"),
        "{}",
        errs[0]
    );
    ok(&format!(
        "[ipxe]\nfallback_script = inspector.ipxe\n[pxe]\nipxe_boot_script = {}\n",
        needs_fallback.display()
    ));
}

#[test]
fn errors_of_rules_across_options_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = write(dir.path(), "key", "k\n");
    for (text, expected) in [
        (
            "[glance]\n\nswift_endpoint_url = ftp://swift\n",
            "ironboot.conf:3: glance.swift_endpoint_url: invalid value \"ftp://swift\"",
        ),
        (
            "[glance]\nswift_internal_endpoint_url = http://u:p@swift\n",
            "ironboot.conf:2: glance.swift_internal_endpoint_url: invalid value",
        ),
        (
            "[glance]\n\n\nswift_container = a/b\n",
            "ironboot.conf:4: glance.swift_container: invalid value \"a/b\"",
        ),
        (
            "[glance]\nswift_api_version = v1 x\n",
            "ironboot.conf:2: glance.swift_api_version: invalid value",
        ),
        (
            "[glance]\nswift_account = AUTH/x\n",
            "ironboot.conf:2: glance.swift_account: invalid value",
        ),
        (
            "[database]\n\nconnection = mysql://u:p@h/db\n",
            "ironboot.conf:3: database.connection: invalid value: MySQL",
        ),
        (
            "[api]\n\nport = 7000\n[httpboot]\nport = 7000\n",
            "ironboot.conf:5: httpboot.port: 7000 is also api.port",
        ),
        (
            "[httpboot]\n\n\nport = 6385\n",
            "ironboot.conf:4: httpboot.port: 6385 is also api.port",
        ),
        (
            "[api]\n\nauth_strategy = token\n",
            "ironboot.conf:3: api.token_file: is required when api.auth_strategy = token",
        ),
        (
            "[ipxe]\n\nuse_swift = true\n",
            "ironboot.conf:3: glance.swift_endpoint_url: is required",
        ),
        (
            &format!(
                "[glance]\nswift_temp_url_key = k\n\nswift_temp_url_key_file = {}\n",
                key.display()
            ),
            "ironboot.conf:4: glance.swift_temp_url_key_file: is set together with",
        ),
    ] {
        let errs = errors(text);
        assert!(
            errs.iter().any(|e| e.starts_with(expected)),
            "{text:?}: expected {expected:?} in {errs:?}"
        );
    }
    // without a file there is no location, only the option
    let err = from_str("[glance]\nswift_container = a/b\n", None).unwrap_err();
    assert!(
        err.0[0].to_string().starts_with("glance.swift_container: "),
        "{err}"
    );
}

#[test]
fn regression_token_file_with_two_newlines_locks_everyone_out() {
    // A token file written as `tok\n\n` used to give the token `tok\n`, which the server
    // then required and no client sent. The token is kept as it is (oslo's rule: one
    // trailing newline is removed), and `config check` and `serve` warn, with the line.
    let dir = tempfile::tempdir().unwrap();
    let tok = write(dir.path(), "token", "tok-123\n\n");
    let l = ok(&format!(
        "[api]\nauth_strategy = token\n\ntoken_file = {}\n",
        tok.display()
    ));
    assert_eq!(l.settings.api_token.unwrap().expose(), "tok-123\n");
    let w = l.warnings.join("\n");
    assert!(
        w.contains(&format!(
            "ironboot.conf:4: api.token_file: the secret in {} has whitespace at the end",
            tok.display()
        )),
        "{w}"
    );
    assert!(!w.contains("tok-123"), "{w}");

    // the same rule for the temp-URL key file, and CRLF files are fine
    let key = write(dir.path(), "key", "from-file\r\n");
    let l = ok(&SWIFT.replace(
        "swift_temp_url_key = s3cr3t-key\n",
        &format!("swift_temp_url_key_file = {}\n", key.display()),
    ));
    assert_eq!(l.settings.swift.unwrap().key.unwrap().expose(), "from-file");
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    std::fs::write(&key, " from-file\n").unwrap();
    let l = ok(&SWIFT.replace(
        "swift_temp_url_key = s3cr3t-key\n",
        &format!("swift_temp_url_key_file = {}\n", key.display()),
    ));
    assert_eq!(
        l.settings.swift.unwrap().key.unwrap().expose(),
        " from-file"
    );
    assert!(
        l.warnings.iter().any(
            |w| w.contains("glance.swift_temp_url_key_file: the secret in")
                && w.contains("at the start")
        ),
        "{:?}",
        l.warnings
    );

    // only whitespace: an error
    std::fs::write(&tok, "\n\n").unwrap();
    let errs = errors(&format!(
        "[api]\nauth_strategy = token\ntoken_file = {}\n",
        tok.display()
    ));
    assert!(
        errs[0].starts_with("ironboot.conf:3: api.token_file: ")
            && errs[0].contains("only whitespace"),
        "{errs:?}"
    );
}

#[test]
fn regression_utf8_bom_before_the_first_section() {
    // Notepad writes a BOM; it used to be "comes before any [section] header".
    let l = ok("\u{feff}[glance]\nswift_container = images\n");
    assert_eq!(l.settings.options.glance.swift_container, "images");
    let errs = errors("\u{feff}[glance]\nswift_store_multiple_containers_seed = 40\n");
    assert!(errs[0].starts_with("ironboot.conf:2: "), "{}", errs[0]);
}

#[test]
fn url_redaction_keeps_everything_but_the_password() {
    use validate::redact_url_password as r;
    for (url, expected) in [
        (
            "postgres://ironic:pgpass@127.0.0.1/ironic",
            "postgres://ironic:<redacted>@127.0.0.1/ironic",
        ),
        (
            "postgres://u:p@[::1]:5432/db?sslmode=require",
            "postgres://u:<redacted>@[::1]:5432/db?sslmode=require",
        ),
        ("postgres://u:p@ss@h/db", "postgres://u:<redacted>@h/db"),
        ("postgres://u:p%40x@h/db", "postgres://u:<redacted>@h/db"),
        ("postgres://u:p@h", "postgres://u:<redacted>@h"),
        (
            "postgres://h/db?password=p&x=1#frag",
            "postgres://h/db?password=<redacted>&x=1#frag",
        ),
        (
            "postgres:///db?host=/run/pg&password=p",
            "postgres:///db?host=/run/pg&password=<redacted>",
        ),
        (
            "postgres://u:p@h/db?password=q",
            "postgres://u:<redacted>@h/db?password=<redacted>",
        ),
        ("postgres://u@h/db", "postgres://u@h/db"),
        (
            "postgres://h/db?sslmode=disable",
            "postgres://h/db?sslmode=disable",
        ),
        ("nonsense", "nonsense"),
        // not a URL the url crate (or sqlx) reads: nothing after the scheme is shown
        ("postgres://u:p/ss@h/db", "postgres://<redacted>"),
        ("postgres://u:secret@h:99999/db", "postgres://<redacted>"),
    ] {
        assert_eq!(r(url), expected, "{url}");
    }
}

#[test]
fn swift_endpoints_are_checked_with_the_url_crate() {
    for (value, expected) in [
        ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
        (
            "https://rgw.example.com/swift",
            "https://rgw.example.com/swift",
        ),
        ("http://[fd00::5]:8080", "http://[fd00::5]:8080"),
        // kept as written: the url crate's normalisation does not leak into the URLs
        ("http://Swift:80", "http://Swift:80"),
    ] {
        let l = ok(&SWIFT.replace("http://127.0.0.1:8080", value));
        assert_eq!(l.settings.swift.unwrap().public_endpoint.as_str(), expected);
    }
    for bad in [
        "ftp://h",
        "h:8080",
        "http://",
        "http:///x",
        "http:h",
        "HTTP://h",
        "http://h/?a",
        "http://h/#f",
        "http://u:p@h",
        "http://@h",
        "http://h:99999",
        "http://[::1",
        "http://h\\x",
    ] {
        let errs = errors(&SWIFT.replace("http://127.0.0.1:8080", bad));
        assert!(
            errs.iter().any(|e| e.starts_with(&format!(
                "ironboot.conf:4: glance.swift_endpoint_url: invalid value {bad:?}"
            ))),
            "{bad}: {errs:?}"
        );
    }
}

const GLANCE: &str = "auth_type = password\nauth_url = http://127.0.0.1:5000\nusername = ironboot\n\
                      password = pa55-word\nproject_name = service\n";

#[test]
fn glance_password_auth_derives_typed_settings() {
    let l = ok(&format!("{SWIFT}{GLANCE}region_name = RegionOne\n"));
    let g = l.settings.glance.unwrap();
    let GlanceAuth::Password(p) = &g.auth else {
        panic!("{g:?}")
    };
    assert_eq!(p.auth_url, "http://127.0.0.1:5000");
    assert_eq!(p.username, "ironboot");
    assert_eq!(p.password.expose(), "pa55-word");
    assert_eq!(p.project_name, "service");
    assert_eq!(
        (p.user_domain_name.as_str(), p.project_domain_name.as_str()),
        ("Default", "Default")
    );
    assert_eq!(g.region_name.as_deref(), Some("RegionOne"));
    assert_eq!(g.interfaces, vec![Interface::Internal, Interface::Public]);
    assert_eq!(g.timeout, std::time::Duration::from_secs(10));
    assert_eq!((g.num_retries, g.metadata_cache_ttl), (0, 30));
    assert!(g.endpoint_override.is_none() && g.ca.is_none() && !g.insecure);
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
    // without auth_type nothing is derived
    assert!(ok(SWIFT).settings.glance.is_none());
}

#[test]
fn glance_auth_type_needs_its_options() {
    let errs = errors(&format!("{SWIFT}auth_type = password\n"));
    for option in ["auth_url", "username", "project_name", "password"] {
        assert!(
            errs.iter().any(|e| e.starts_with(&format!(
                "ironboot.conf:7: glance.{option}: is required when glance.auth_type = password"
            ))),
            "{option}: {errs:?}"
        );
    }
    assert_eq!(errs.len(), 4, "{errs:?}");
    let errs = errors(&format!("{SWIFT}auth_type = none\n"));
    assert_eq!(
        errs,
        vec![
            "ironboot.conf:7: glance.endpoint_override: is required when glance.auth_type = none: \
             without Keystone there is no catalog; set Glance's URL, e.g. http://glance.example.com:9292"
        ]
    );
    let l = ok(&format!(
        "{SWIFT}auth_type = none\nendpoint_override = http://127.0.0.1:9292\n"
    ));
    let g = l.settings.glance.unwrap();
    assert!(matches!(g.auth, GlanceAuth::None));
    assert_eq!(
        g.endpoint_override.as_deref(),
        Some("http://127.0.0.1:9292")
    );
    // an empty required value counts as missing, at its own line
    let errs = errors(&format!("{SWIFT}{GLANCE}username =\n"));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("ironboot.conf:12: glance.username: is required")),
        "{errs:?}"
    );
}

#[test]
fn glance_options_without_auth_type_warn_and_cache_mode_takes_glance() {
    let l = ok("[glance]\nusername = x\nauth_url = http://ks:5000\n");
    assert!(l.settings.glance.is_none());
    assert!(
        l.warnings.iter().any(|w| w.contains("glance.auth_url: is ignored because glance.auth_type is not set (auth_url, username set)")),
        "{:?}",
        l.warnings
    );
    // cache mode serves Glance images too: no warning
    let l = ok(&format!("[glance]\n{GLANCE}"));
    assert!(l.settings.glance.is_some());
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);
}

#[test]
fn glance_password_file_and_urls() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "pw", "from-file\n");
    let text = format!(
        "{SWIFT}auth_type = password\nauth_url = https://ks.example.com:5000/v3\nusername = u\n\
         project_name = p\npassword_file = {}\n",
        file.display()
    );
    let l = ok(&text);
    let GlanceAuth::Password(p) = l.settings.glance.unwrap().auth else {
        panic!()
    };
    assert_eq!(p.password.expose(), "from-file");
    let errs = errors(&format!("{text}password = other\n"));
    assert!(
        errs.iter().any(|e| e.contains(
            "glance.password_file: is set together with glance.password; keep only one of them"
        )),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .all(|e| !e.contains("other") && !e.contains("from-file"))
    );
    for (option, value, fragment) in [
        ("auth_url", "keystone:5000", "only http:// and https://"),
        (
            "auth_url",
            "http://admin:pw@ks:5000",
            "must not hold a user or password",
        ),
        ("auth_url", "http://[::1/v3", "not a valid URL"),
        (
            "endpoint_override",
            "http://g:9292/?x=1",
            "query or fragment",
        ),
        (
            "valid_interfaces",
            "internal,private",
            "\"private\" is not an interface",
        ),
        ("auth_type", "v3token", "does not implement"),
        ("user_domain_name", " ", "must not be empty"),
    ] {
        let errs = errors(&format!("{SWIFT}{GLANCE}{option} = {value}\n"));
        assert!(
            errs.iter().any(|e| e
                .starts_with(&format!("ironboot.conf:12: glance.{option}: invalid value"))
                && e.contains(fragment)),
            "{option} = {value}: {errs:?}"
        );
        assert!(errs.iter().all(|e| !e.contains("pa55-word")), "{errs:?}");
    }
}

#[test]
fn glance_cafile_is_read_and_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = write(dir.path(), "garbage.pem", "not a certificate\n");
    let errs = errors(&format!("{SWIFT}{GLANCE}cafile = {}\n", garbage.display()));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("ironboot.conf:12: glance.cafile: ")
                && e.contains("holds no PEM certificate")),
        "{errs:?}"
    );
    let errs = errors(&format!(
        "{SWIFT}{GLANCE}cafile = {}/missing.pem\n",
        dir.path().display()
    ));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("ironboot.conf:12: glance.cafile: cannot read")),
        "{errs:?}"
    );
    let broken = write(
        dir.path(),
        "broken.pem",
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    );
    let errs = errors(&format!("{SWIFT}{GLANCE}cafile = {}\n", broken.display()));
    assert!(
        errs.iter()
            .any(|e| e.starts_with("ironboot.conf:12: glance.cafile: ")),
        "{errs:?}"
    );
}

#[test]
fn glance_secrets_never_appear_in_check_output_or_debug() {
    let l = ok(&format!("{SWIFT}{GLANCE}"));
    let rendered = render_effective(&l.settings);
    assert!(rendered.contains("password = <redacted>"), "{rendered}");
    assert!(
        rendered.contains("# derived: Glance images from the catalog's image endpoint (interfaces internal, public), as ironboot@service (Default / Default) through Keystone http://127.0.0.1:5000; metadata reused for 30 s"),
        "{rendered}"
    );
    let debug = format!("{:?}", l.settings);
    for text in [&rendered, &debug] {
        assert!(!text.contains("pa55-word"), "{text}");
    }
    let errs = errors(&format!("{SWIFT}{GLANCE}timeout = 0\n"));
    assert!(errs.iter().all(|e| !e.contains("pa55-word")));
}

const SWIFT_NO_KEY: &str =
    "[ipxe]\nuse_swift = true\n[glance]\nswift_endpoint_url = http://127.0.0.1:8080\n";

#[test]
fn swift_credentials_replace_the_key_and_the_account() {
    // v1 auth: neither key nor account configured
    let l = ok(&format!(
        "{SWIFT_NO_KEY}[swift]\nauth_type = v1password\nauth_url = http://127.0.0.1:8080/auth/v1.0\n\
         username = test:tester\npassword = testing\ntemp_url_key_refresh_interval = 30\n"
    ));
    let s = l.settings.swift.unwrap();
    assert!(s.key.is_none() && s.configured_account.is_none());
    let d = s.discovery.unwrap();
    assert_eq!(d.refresh, std::time::Duration::from_secs(30));
    match d.auth {
        SwiftAuth::V1 {
            auth_url,
            username,
            password,
        } => {
            assert_eq!(auth_url, "http://127.0.0.1:8080/auth/v1.0");
            assert_eq!(username, "test:tester");
            assert_eq!(password.expose(), "testing");
        }
        other => panic!("{other:?}"),
    }
    assert!(l.warnings.is_empty(), "{:?}", l.warnings);

    // Keystone, with the prefix's "_" added
    let l = ok(&format!(
        "{SWIFT_NO_KEY}swift_account_prefix = KEY\n[swift]\nauth_type = password\n\
         auth_url = http://127.0.0.1:5000\nusername = u\npassword = p\nproject_name = service\n"
    ));
    let s = l.settings.swift.unwrap();
    assert_eq!(s.account_prefix, "KEY_");
    assert!(matches!(
        s.discovery.unwrap().auth,
        SwiftAuth::Keystone { ref auth, .. } if auth.project_name == "service"
    ));

    // without credentials, key and account are required, and the error says how else
    let errs = errors(SWIFT_NO_KEY);
    assert!(
        errs.iter()
            .any(|e| e.contains("glance.swift_temp_url_key: is required")
                && e.contains("[swift] auth_type")),
        "{errs:?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("glance.swift_account: is required")),
        "{errs:?}"
    );

    // both a key and credentials: the key wins, with a warning
    let l = ok(&format!(
        "{SWIFT}[swift]\nauth_type = v1password\nauth_url = http://127.0.0.1:8080/auth/v1.0\n\
         username = a:u\npassword = p\n"
    ));
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("swift.auth_type") && w.contains("configured key is used")),
        "{:?}",
        l.warnings
    );
    // credentials without auth_type are ignored, with a warning
    let l = ok("[swift]\nusername = a:u\npassword = p\n");
    assert!(
        l.warnings
            .iter()
            .any(|w| w.contains("swift.username") && w.contains("auth_type is not set")),
        "{:?}",
        l.warnings
    );
    // the password is never printed
    let l = ok(&format!(
        "{SWIFT_NO_KEY}[swift]\nauth_type = v1password\nauth_url = http://127.0.0.1:8080/auth/v1.0\n\
         username = a:u\npassword = hunter2-secret\n"
    ));
    assert!(!format!("{:?}", l.settings).contains("hunter2-secret"));
}
