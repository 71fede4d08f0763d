//! The `ironboot` binary: exit codes, `serve` start-up and shutdown, and the `node`
//! commands against a running server.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::ironboot_bin;
use crate::support::server::{Db, TestServer, random_mac};

fn ironboot() -> Command {
    let mut c = Command::new(ironboot_bin());
    c.env_remove("IRONBOOT_CONFIG")
        .env_remove("IRONBOOT_URL")
        .env_remove("IRONBOOT_TOKEN_FILE")
        .env_remove("IRONBOOT_TEMP_URL_KEY");
    c
}

/// A port that was free a moment ago. Another process may take it before `serve` binds
/// it: use it only through [`start_serve`], which starts again on new ports when that
/// happens.
fn probably_free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback port that refuses connections for as long as the socket lives: it is
/// bound, so nothing else can take it, and it does not listen.
fn refusing_port() -> (tokio::net::TcpSocket, u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let port = socket.local_addr().unwrap().port();
    (socket, port)
}

/// A `serve` that logged `ironboot serving`, with the addresses it logged and a thread
/// collecting the rest of its stderr.
pub(crate) struct Serving {
    pub(crate) child: Child,
    pub(crate) api: String,
    pub(crate) boot: String,
    pub(crate) log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Serving {
    /// Waits for the process to exit (after a signal) and returns its status and log.
    pub(crate) fn wait(mut self, within: Duration) -> (ExitStatus, String) {
        let start = Instant::now();
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            if start.elapsed() > within {
                self.child.kill().ok();
                panic!(
                    "serve did not stop within {within:?}:\n{}",
                    self.log.lock().unwrap()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.reader.join().unwrap();
        let log = self.log.lock().unwrap().clone();
        (status, log)
    }
}

/// The value of `field=` in a log line.
fn log_field<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(field)?.strip_prefix('='))
}

/// Starts `serve` with `command(api_port, boot_port)` and waits for its `ironboot serving`
/// line. Picking free ports by binding and releasing them races with every other process;
/// when `serve` then cannot listen because a port was taken meanwhile, it is started again
/// on new ports. Any other exit is a failure.
pub(crate) fn start_serve(mut command: impl FnMut(u16, u16) -> Command) -> Serving {
    for _ in 0..5 {
        let (api, boot) = (probably_free_port(), probably_free_port());
        if api == boot {
            continue;
        }
        let mut child = command(api, boot)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel::<String>();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.lock().unwrap().push_str(&format!("{line}\n"));
                    let _ = tx.send(line);
                }
            })
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if line.contains("ironboot serving") => {
                    let api_addr = log_field(&line, "api").expect("api= in the log line");
                    let boot_addr = log_field(&line, "boot").expect("boot= in the log line");
                    assert_eq!(api_addr, format!("127.0.0.1:{api}"), "{line}");
                    assert_eq!(boot_addr, format!("127.0.0.1:{boot}"), "{line}");
                    return Serving {
                        api: api_addr.to_string(),
                        boot: boot_addr.to_string(),
                        child,
                        log,
                        reader,
                    };
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    reader.join().unwrap();
                    let log = log.lock().unwrap().clone();
                    if log.contains("cannot listen on") && log.contains("in use") {
                        eprintln!("a port was taken before serve bound it; new ports: {log}");
                        break;
                    }
                    panic!("serve exited ({status}) before serving:\n{log}");
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    child.kill().ok();
                    panic!(
                        "serve did not log `ironboot serving` within 30 s:\n{}",
                        log.lock().unwrap()
                    );
                }
            }
        }
    }
    panic!("serve could not bind free ports in 5 attempts");
}

/// Runs a command to completion, killing it after `timeout` (then the output says so).
fn output_within(cmd: &mut Command, timeout: Duration) -> (Option<ExitStatus>, String, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        out.read_to_string(&mut s).ok();
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        err.read_to_string(&mut s).ok();
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > timeout {
            child.kill().ok();
            child.wait().ok();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (
        status,
        out_reader.join().unwrap(),
        err_reader.join().unwrap(),
    )
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn invalid_config_exits_64_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(
        &conf,
        "[glance]\nswift_store_multiple_containers_seed = 40\n[ipxe]\nuse_swift = true\n",
    )
    .unwrap();
    for cmd in [&["config", "check"][..], &["serve"][..]] {
        let out = ironboot()
            .arg("--config")
            .arg(&conf)
            .args(cmd)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{cmd:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "{}:2: glance.swift_store_multiple_containers_seed: invalid value \"40\"",
                conf.display()
            )),
            "{err}"
        );
        assert!(
            err.contains("glance.swift_endpoint_url: is required when ipxe.use_swift = true"),
            "{err}"
        );
    }
    // a template file that does not compile is a configuration error too
    std::fs::write(dir.path().join("node.j2"), "{% if %}").unwrap();
    std::fs::write(
        &conf,
        format!(
            "[DEFAULT]\nstate_path = {}\n[pxe]\nipxe_config_template = {}/node.j2\n",
            dir.path().display(),
            dir.path().display()
        ),
    )
    .unwrap();
    let out = ironboot()
        .arg("--config")
        .arg(&conf)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4: pxe.ipxe_config_template: the template {}/node.j2 does not compile",
            conf.display(),
            dir.path().display()
        )) && err.contains("template node.ipxe:"),
        "{err}"
    );
    // a missing config file named on the command line is an error, not the defaults
    let out = ironboot()
        .args(["--config", "/nonexistent/ironboot.conf", "config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn config_sample_and_check_print_settings_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(
        &conf,
        "[glance]\nswift_temp_url_key = very-secret-key\n[pxe]\nipxe_use_swift = false\n",
    )
    .unwrap();
    let out = ironboot()
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stdout.contains("swift_temp_url_key = <redacted>") && !stdout.contains("very-secret"),
        "{stdout}"
    );
    assert!(
        stderr.contains("[pxe] ipxe_use_swift is deprecated; use [ipxe] use_swift"),
        "{stderr}"
    );
    let sample = ironboot().args(["config", "sample"]).output().unwrap();
    assert!(
        String::from_utf8(sample.stdout)
            .unwrap()
            .contains("#swift_temp_url_duration = 1200")
    );
}

/// `serve` as an unprivileged user with no configuration file: SQLite and the mirror go
/// under $XDG_STATE_HOME, the listeners answer, SIGTERM stops it cleanly.
#[test]
fn serve_runs_without_root_and_stops_on_sigterm() {
    let home = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let state = home.path().join("xdg-state");
    // Ports are the only thing set, through a config file nobody can read; everything else
    // is a default.
    let conf = home.path().join("ports.conf");
    let serving = start_serve(|api, boot| {
        std::fs::write(
            &conf,
            format!("[api]\nport = {api}\n[httpboot]\nport = {boot}\n"),
        )
        .unwrap();
        std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        let mut cmd = if as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(ironboot_bin());
            c
        } else {
            Command::new(ironboot_bin())
        };
        cmd.env_remove("IRONBOOT_CONFIG")
            .env("HOME", home.path())
            .env("XDG_STATE_HOME", &state)
            .arg("--config")
            .arg(&conf)
            .arg("serve");
        cmd
    });
    let (api, boot) = (serving.api.clone(), serving.boot.clone());
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        if let Ok(r) = reqwest::blocking::get(format!("http://{api}/healthz")) {
            break r.status().is_success();
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(healthy);
    let master = reqwest::blocking::get(format!("http://{boot}/boot.ipxe"))
        .unwrap()
        .text()
        .unwrap();
    assert!(master.starts_with("#!ipxe"));
    assert!(
        state.join("ironboot/ironboot.sqlite").exists(),
        "SQLite under $XDG_STATE_HOME/ironboot"
    );
    assert!(state.join("ironboot/httpboot/boot.ipxe").exists());

    Command::new("kill")
        .args(["-TERM", &serving.child.id().to_string()])
        .status()
        .unwrap();
    let (status, log) = serving.wait(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{log}");
    assert!(
        !log.contains('\u{1b}'),
        "no ANSI colours in a log that is not a terminal: {log:?}"
    );
    assert!(
        log.contains("SIGTERM received, shutting down") && log.contains("stopped"),
        "{log}"
    );
}

#[tokio::test]
async fn node_commands_drive_the_api() {
    let s = TestServer::start(Db::Sqlite, "").await;
    let url = s.api.clone();
    let mac = random_mac();
    let run = move |args: Vec<String>| {
        let url = url.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                ironboot()
                    .env("IRONBOOT_URL", url)
                    .arg("node")
                    .args(args)
                    .output()
                    .unwrap()
            })
            .await
            .unwrap()
        }
    };
    let args = |s: &str| s.split_whitespace().map(str::to_string).collect::<Vec<_>>();

    let out = run(args(&format!(
        "create --name vm1 --mac {mac} --boot-mode uefi --deploy-kernel http://10.0.2.2/k --deploy-ramdisk http://10.0.2.2/r --json"
    )))
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let node: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(node["boot_mode"], "uefi");

    let out = run(args("list")).await;
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with("UUID") && table.contains("vm1") && table.contains(&mac),
        "{table}"
    );

    let mut kernel_args = args(
        "update vm1 --kernel http://10.0.2.2/ik --ramdisk http://10.0.2.2/ir --kernel-append-params",
    );
    kernel_args.push("console=ttyS0 role=instance".into());
    let out = run(kernel_args).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8(out.stdout).unwrap();
    assert!(
        shown.contains("instance_info.kernel_append_params")
            && shown.contains("console=ttyS0 role=instance"),
        "{shown}"
    );

    let out = run(args("boot vm1 --target instance")).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(args("ipxe vm1")).await;
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(
        script.contains(
            "kernel --name kernel http://10.0.2.2/ik console=ttyS0 role=instance initrd=ramdisk"
        ),
        "{script}"
    );

    // API errors become exit 1 with the code and message
    let out = run(args("boot vm1 --target deploy --json")).await;
    assert!(out.status.success());
    let out = run(args(&format!("create --mac {mac}"))).await;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("already belongs to node") && err.contains("duplicate_mac, HTTP 409"),
        "{err}"
    );
    let out = run(args("show nosuchnode")).await;
    assert!(String::from_utf8_lossy(&out.stderr).contains("node_not_found"));

    let out = run(args("delete vm1")).await;
    assert!(out.status.success());
    let out = run(args("list --json")).await;
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list["nodes"], Value::Array(vec![]));
    s.stop().await;

    // an API that is not there is a clear error
    let (_socket, port) = refusing_port();
    let out = tokio::task::spawn_blocking(move || {
        ironboot()
            .args(["node", "--url", &format!("http://127.0.0.1:{port}"), "list"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `ironboot serve` running?"));
}

/// Options that take any value: no bad value exists for them alone. Every other option has
/// rows in [`BAD_VALUES`].
const ANY_VALUE_IS_VALID: &[&str] = &[
    // a secret string; only its combination with the key file can be wrong
    "glance.swift_temp_url_key",
    // any region name may be in a catalog
    "glance.region_name",
    "swift.region_name",
];

/// `[swift] auth_type = password` with every option it needs but the one under test.
const SWIFT_PASSWORD_BUT: &str = "[swift]\nauth_type = password\nauth_url = http://127.0.0.1:5000\n\
                                  username = u\npassword = p\nproject_name = p\n";

/// `[swift] auth_type = v1password` with every option it needs but the one under test.
const SWIFT_V1_BUT: &str = "[swift]\nauth_type = v1password\n\
                            auth_url = http://127.0.0.1:8080/auth/v1.0\nusername = a:u\npassword = p\n";

/// `[swift] auth_type = password` with every option it needs but a password.
const SWIFT_NO_PASSWORD: &str = "[swift]\nauth_type = password\nauth_url = http://127.0.0.1:5000\n\
                                 username = u\nproject_name = p\n";

/// `[glance] auth_type = password` with every option it needs but the one under test.
const GLANCE_PASSWORD_BUT: &str = "[glance]\nauth_type = password\nauth_url = http://127.0.0.1:5000\n\
                                   username = u\npassword = p\nproject_name = p\n";

/// `[glance] auth_type = password` with every option it needs but a password.
const GLANCE_NO_PASSWORD: &str = "[glance]\nauth_type = password\nauth_url = http://127.0.0.1:5000\n\
                                  username = u\nproject_name = p\n";

/// `(option, bad value, lines the value needs around it to matter)`. `{dir}` is a
/// directory holding `broken.j2` (does not compile), `undefined.j2` (renders an undefined
/// variable) and `blank` (only newlines). At least one row per option of
/// `ironboot::config::option_specs()`, except [`ANY_VALUE_IS_VALID`].
const BAD_VALUES: &[(&str, &str, &str)] = &[
    ("DEFAULT.state_path", "", ""),
    ("DEFAULT.host", "", ""),
    ("DEFAULT.graceful_shutdown_timeout", "0", ""),
    ("DEFAULT.graceful_shutdown_timeout", "3601", ""),
    ("ipxe.use_swift", "maybe", ""),
    ("ipxe.tempurl_redirect", "maybe", ""),
    ("ipxe.fallback_script", "boot.ipxe", ""),
    ("ipxe.fallback_script", "pxelinux.cfg", ""),
    ("ipxe.fallback_script", "a{b", ""),
    ("ipxe.fallback_script", ":x", ""),
    ("ipxe.fallback_script", "*x", ""),
    ("ipxe.fallback_script", "sub/inspector.ipxe", ""),
    (
        "ipxe.fallback_script",
        "5f7b3a3e-4a7c-4d1e-9f5e-2b8a6c1d0e9f",
        "",
    ),
    ("ipxe.fallback_script", "tftp://10.0.0.1/inspector.ipxe", ""),
    ("ipxe.download_attempts", "0", ""),
    ("ipxe.download_attempts", "51", ""),
    ("ipxe.retry_max_delay", "0", ""),
    ("ipxe.retry_max_delay", "601", ""),
    ("pxe.ipxe_timeout", "3601", ""),
    ("pxe.ipxe_timeout", "-1", ""),
    ("pxe.kernel_append_params", "console=ttyS0 || reboot", ""),
    ("pxe.kernel_append_params", "root=$${root}", ""),
    ("pxe.kernel_append_params", "quiet #rest", ""),
    ("pxe.ipxe_boot_script", "{dir}/broken.j2", ""),
    ("pxe.ipxe_boot_script", "{dir}/missing.j2", ""),
    ("pxe.ipxe_config_template", "{dir}/broken.j2", ""),
    ("pxe.ipxe_config_template", "{dir}/undefined.j2", ""),
    ("pxe.ipxe_config_template", "{dir}/missing.j2", ""),
    ("deploy.http_root", "", ""),
    ("glance.swift_temp_url_key_file", "{dir}/missing-key", ""),
    ("glance.swift_temp_url_key_file", "{dir}/blank", ""),
    ("glance.swift_temp_url_duration", "0", ""),
    ("glance.swift_temp_url_duration", "315360001", ""),
    ("glance.swift_temp_url_duration", "18446744073709551615", ""),
    (
        "glance.swift_temp_url_expected_download_start_delay",
        "315360001",
        "",
    ),
    ("glance.swift_temp_url_digest", "md5", ""),
    ("glance.swift_temp_url_ip_range", "10.0.0.1/8", ""),
    ("glance.swift_endpoint_url", "ftp://swift.example.com", ""),
    ("glance.swift_endpoint_url", "http://user:pass@swift", ""),
    ("glance.swift_internal_endpoint_url", "swift:8080", ""),
    ("glance.swift_api_version", "v1/x", ""),
    ("glance.swift_account", "AUTH_a/b", ""),
    ("glance.swift_account_prefix", "AU/TH", ""),
    ("glance.swift_container", "a/b", ""),
    ("glance.swift_store_multiple_containers_seed", "33", ""),
    ("glance.auth_type", "kerberos", ""),
    ("glance.auth_type", "v3applicationcredential", ""),
    ("glance.auth_url", "ftp://keystone:5000", ""),
    ("glance.auth_url", "http://admin:pw@keystone:5000", ""),
    ("glance.username", "", GLANCE_PASSWORD_BUT),
    ("glance.password", "", GLANCE_PASSWORD_BUT),
    (
        "glance.password_file",
        "{dir}/missing-password",
        GLANCE_NO_PASSWORD,
    ),
    ("glance.password_file", "{dir}/blank", GLANCE_NO_PASSWORD),
    ("glance.project_name", "", GLANCE_PASSWORD_BUT),
    ("glance.user_domain_name", "", ""),
    ("glance.project_domain_name", "", ""),
    ("glance.valid_interfaces", "internal,private", ""),
    ("glance.endpoint_override", "glance:9292", ""),
    (
        "glance.endpoint_override",
        "",
        "[glance]\nauth_type = none\n",
    ),
    ("glance.cafile", "{dir}/blank", GLANCE_PASSWORD_BUT),
    ("glance.cafile", "{dir}/missing-ca.pem", GLANCE_PASSWORD_BUT),
    ("glance.insecure", "maybe", ""),
    ("glance.timeout", "0", ""),
    ("glance.timeout", "601", ""),
    ("glance.num_retries", "11", ""),
    ("glance.metadata_cache_ttl", "3601", ""),
    ("pxe.tftp_master_path", "{dir}/blank/master", ""),
    ("pxe.image_cache_size", "0", ""),
    ("pxe.image_cache_size", "16777217", ""),
    ("pxe.image_cache_ttl", "0", ""),
    ("pxe.http_passthrough", "maybe", ""),
    ("deploy.http_url", "ftp://boot.example.com", ""),
    ("deploy.http_url", "http://boot.example.com/?x", ""),
    ("conductor.cache_clean_up_interval", "86401", ""),
    ("conductor.heartbeat_interval", "0", ""),
    ("conductor.heartbeat_timeout", "1", ""),
    ("conductor.index_resync_interval", "0", ""),
    ("swift.auth_type", "none", ""),
    ("swift.auth_type", "tempauth", ""),
    ("swift.auth_url", "ftp://keystone:5000", ""),
    ("swift.auth_url", "http://admin:pw@swift:8080/auth/v1.0", ""),
    ("swift.auth_url", "", SWIFT_V1_BUT),
    ("swift.username", "", SWIFT_PASSWORD_BUT),
    ("swift.username", "", SWIFT_V1_BUT),
    ("swift.password", "", SWIFT_PASSWORD_BUT),
    ("swift.password", "", SWIFT_V1_BUT),
    (
        "swift.password_file",
        "{dir}/missing-password",
        SWIFT_NO_PASSWORD,
    ),
    ("swift.password_file", "{dir}/blank", SWIFT_NO_PASSWORD),
    ("swift.project_name", "", SWIFT_PASSWORD_BUT),
    ("swift.user_domain_name", "", ""),
    ("swift.project_domain_name", "", ""),
    ("swift.valid_interfaces", "internal,private", ""),
    ("swift.timeout", "0", ""),
    ("swift.timeout", "601", ""),
    ("swift.temp_url_key_refresh_interval", "9", ""),
    ("swift.temp_url_key_refresh_interval", "86401", ""),
    ("database.connection", "mysql+pymysql://u:p@h/db", ""),
    ("database.connection", "sqlite://", ""),
    ("database.max_pool_size", "0", ""),
    ("database.max_pool_size", "1001", ""),
    ("api.host_ip", "localhost", ""),
    ("api.port", "0", ""),
    ("api.port", "65536", ""),
    ("api.auth_strategy", "keystone", ""),
    (
        "api.token_file",
        "{dir}/missing-token",
        "[api]\nauth_strategy = token\n",
    ),
    (
        "api.token_file",
        "{dir}/blank",
        "[api]\nauth_strategy = token\n",
    ),
    ("api.allow_insecure_noauth", "maybe", ""),
    ("api.header_timeout", "0", ""),
    ("api.header_timeout", "3601", ""),
    ("api.keepalive_timeout", "0", ""),
    ("api.request_timeout", "3601", ""),
    ("api.max_connections", "1048577", ""),
    ("api.max_limit", "0", ""),
    ("api.max_limit", "100001", ""),
    ("api.max_document_size", "1023", ""),
    ("api.max_document_size", "67108865", ""),
    ("api.max_body_size", "1023", ""),
    // below the default max_document_size (65536): a rule across options
    ("api.max_body_size", "65535", ""),
    ("httpboot.host_ip", "::g", ""),
    ("httpboot.port", "0", ""),
    ("httpboot.port", "70000", ""),
    ("httpboot.header_timeout", "0", ""),
    ("httpboot.keepalive_timeout", "3601", ""),
    ("httpboot.max_connections", "2000000", ""),
];

/// A config with `option = value` on a line of its own, after a base that puts the state
/// in `dir` and the listeners on `ports`; returns the text and the option's line.
fn config_with(
    dir: &Path,
    ports: (u16, u16),
    option: &str,
    value: &str,
    context: &str,
) -> (String, usize) {
    let (section, name) = option.split_once('.').unwrap();
    let mut text = String::new();
    if option != "DEFAULT.state_path" {
        text.push_str(&format!(
            "[DEFAULT]\nstate_path = {}/state\n",
            dir.display()
        ));
    }
    if option != "api.port" {
        text.push_str(&format!("[api]\nport = {}\n", ports.0));
    }
    if option != "httpboot.port" {
        text.push_str(&format!("[httpboot]\nport = {}\n", ports.1));
    }
    text.push_str(context);
    text.push_str(&format!("[{section}]\n"));
    let line = text.lines().count() + 1;
    let value = value.replace("{dir}", &dir.display().to_string());
    text.push_str(&format!("{name} = {value}\n"));
    (text, line)
}

/// Every option has a bad value; for each, `config check` and `serve` both exit 64 and
/// name the option at its file:line, and `serve` does so before binding anything: its
/// ports are held by this test, so a `serve` that got as far as binding would fail with
/// "cannot listen on" (exit 1), and one that started serving would be killed after 20 s.
#[test]
fn config_check_and_serve_refuse_a_bad_value_of_every_option_with_file_and_line() {
    let known: Vec<String> = ironboot::config::option_specs()
        .iter()
        .map(|s| s.key())
        .collect();
    for key in &known {
        let covered = BAD_VALUES.iter().any(|(o, _, _)| o == key);
        let exempt = ANY_VALUE_IS_VALID.contains(&key.as_str());
        assert!(
            covered != exempt,
            "{key}: add a bad value to BAD_VALUES, or (only if no value can be wrong) list it \
             in ANY_VALUE_IS_VALID, not both"
        );
    }
    for (option, _, _) in BAD_VALUES {
        assert!(
            known.iter().any(|k| k == option),
            "{option} in BAD_VALUES is not an option"
        );
    }

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("broken.j2"), "{% if %}").unwrap();
    std::fs::write(
        dir.path().join("undefined.j2"),
        "#!ipxe\n{{ no_such_variable }}\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("blank"), "\n\n").unwrap();
    // Held for the whole test: serve must never get to bind them.
    let api_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let boot_port = TcpListener::bind("127.0.0.1:0").unwrap();
    let ports = (
        api_port.local_addr().unwrap().port(),
        boot_port.local_addr().unwrap().port(),
    );

    let mut failures = Vec::new();
    for (i, (option, value, context)) in BAD_VALUES.iter().enumerate() {
        let (text, line) = config_with(dir.path(), ports, option, value, context);
        let conf = dir.path().join(format!("bad-{i}.conf"));
        std::fs::write(&conf, &text).unwrap();
        let expected = format!("{}:{line}: {option}: ", conf.display());
        for cmd in [&["config", "check"][..], &["serve"][..]] {
            let (status, _, stderr) = output_within(
                ironboot().arg("--config").arg(&conf).args(cmd),
                Duration::from_secs(20),
            );
            let problem = match status {
                None => Some("was still running after 20 s (it accepted the value)".into()),
                Some(s) if s.code() != Some(64) => Some(format!("exited with {s}, not 64")),
                Some(_) if !stderr.contains(&expected) => {
                    Some(format!("did not print {expected:?}"))
                }
                Some(_) if stderr.contains("ironboot serving") => Some("started serving".into()),
                Some(_) => None,
            };
            if let Some(problem) = problem {
                failures.push(format!(
                    "{option} = {value:?}: `ironboot {}` {problem}\n--- config:\n{text}--- stderr:\n{stderr}",
                    cmd.join(" ")
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} checks failed:\n\n{}",
        failures.len(),
        BAD_VALUES.len() * 2,
        failures.join("\n\n")
    );
}

#[test]
fn regression_fallback_script_route_panics_serve() {
    // serve built its boot router with `/<fallback_script>`: boot.ipxe overlapped the
    // master script's route and `a{b`, `:x` and `*x` are route patterns, so serve panicked
    // (exit 101) on a configuration that `config check` called valid.
    let dir = tempfile::tempdir().unwrap();
    let (_api, api) = refusing_port();
    let (_boot, boot) = refusing_port();
    for name in ["boot.ipxe", "a{b", ":x", "*x", "pxelinux.cfg"] {
        let conf = dir.path().join("ironboot.conf");
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nstate_path = {}\n[api]\nport = {api}\n[httpboot]\nport = {boot}\n\
                 [ipxe]\nfallback_script = {name}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        for cmd in [&["config", "check"][..], &["serve"][..]] {
            let (status, _, stderr) = output_within(
                ironboot().arg("--config").arg(&conf).args(cmd),
                Duration::from_secs(20),
            );
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(64),
                "{name}: {cmd:?}: {stderr}"
            );
            assert!(
                stderr.contains(&format!(
                    "{}:8: ipxe.fallback_script: invalid value {name:?}",
                    conf.display()
                )) && !stderr.contains("panicked"),
                "{name}: {cmd:?}: {stderr}"
            );
        }
    }
}

#[test]
fn regression_utf8_bom_config_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(&conf, "\u{feff}[glance]\nswift_container = images\n").unwrap();
    let out = ironboot()
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("swift_container = images"),
        "{}",
        text(&out)
    );
    // and lines are still counted from the first
    std::fs::write(
        &conf,
        "\u{feff}[glance]\nswift_store_multiple_containers_seed = 40\n",
    )
    .unwrap();
    let out = ironboot()
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out).contains(&format!(
            "{}:2: glance.swift_store_multiple_containers_seed",
            conf.display()
        )),
        "{}",
        text(&out)
    );
}

#[test]
fn regression_token_file_with_two_newlines_warns_everywhere_it_is_read() {
    // One rule for every secret file: one trailing newline is removed, other whitespace
    // is kept and reported. `tok\n\n` used to be accepted by serve as `tok\n`, which no
    // client sent (node --token-file stripped every newline).
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "tok-123\n\n").unwrap();
    let conf = dir.path().join("ironboot.conf");
    std::fs::write(
        &conf,
        format!(
            "[api]\nauth_strategy = token\ntoken_file = {}\n",
            token.display()
        ),
    )
    .unwrap();
    let out = ironboot()
        .arg("--config")
        .arg(&conf)
        .args(["config", "check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "warning: {}:3: api.token_file: the secret in {} has whitespace at the end",
            conf.display(),
            token.display()
        )),
        "{err}"
    );
    assert!(!text(&out).contains("tok-123"));

    // node --token-file: the same warning (the command then fails to connect)
    let (_socket, port) = refusing_port();
    let out = ironboot()
        .args(["node", "--url", &format!("http://127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&token)
        .arg("list")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "warning: --token-file: the secret in {} has whitespace at the end",
            token.display()
        )),
        "{}",
        text(&out)
    );
    std::fs::write(&token, "\n").unwrap();
    let out = ironboot()
        .args(["node", "--url", &format!("http://127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&token)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("is empty"), "{}", text(&out));

    // tempurl --key-file: the key keeps its extra newline (the same signature as that key
    // given directly) and the command warns; a single newline is removed
    let key = dir.path().join("key");
    let sign = |key_arg: &[&str], key_file: Option<&Path>| {
        let mut c = ironboot();
        c.args([
            "tempurl",
            "--absolute",
            "GET",
            "1900000000",
            "/v1/AUTH_a/c/o",
        ]);
        if let Some(f) = key_file {
            c.arg("--key-file").arg(f);
        }
        c.args(key_arg);
        let out = c.output().unwrap();
        assert!(out.status.success(), "{}", text(&out));
        (
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    std::fs::write(&key, "k3y\n").unwrap();
    let (url, warn) = sign(&[], Some(&key));
    assert_eq!(url, sign(&["k3y"], None).0);
    assert!(warn.is_empty(), "{warn}");
    std::fs::write(&key, "k3y\n\n").unwrap();
    let (url, warn) = sign(&[], Some(&key));
    assert_eq!(url, sign(&["k3y\n"], None).0);
    assert_ne!(url, sign(&["k3y"], None).0);
    assert!(
        warn.contains(&format!(
            "WARNING: --key-file: the secret in {} has whitespace at the end",
            key.display()
        )),
        "{warn}"
    );
}

/// The zone-less ISO forms are local times, as `time.mktime` reads them: run the binary
/// in fixed zones (POSIX TZ strings need no zone database).
#[test]
fn tempurl_reads_zone_less_iso_times_in_the_local_zone() {
    let expires = |tz: &str, time: &str| -> i64 {
        let out = ironboot()
            .env("TZ", tz)
            .args(["tempurl", "GET", time, "/v1/AUTH_a/c/o", "key"])
            .output()
            .unwrap();
        assert!(out.status.success(), "TZ={tz} {time}: {}", text(&out));
        let url = String::from_utf8(out.stdout).unwrap();
        url.trim()
            .rsplit_once("temp_url_expires=")
            .and_then(|(_, n)| n.split('&').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no temp_url_expires in {url}"))
    };
    let noon_utc = 1_795_694_400; // 2026-11-26T12:00:00Z
    assert_eq!(expires("UTC0", "2026-11-26T12:00:00"), noon_utc);
    assert_eq!(expires("JST-9", "2026-11-26T12:00:00"), noon_utc - 9 * 3600);
    assert_eq!(
        expires("EST5EDT,M3.2.0,M11.1.0", "2026-11-26T12:00:00"),
        noon_utc + 5 * 3600
    );
    // summer time in the same zone
    assert_eq!(
        expires("EST5EDT,M3.2.0,M11.1.0", "2026-07-01T12:00:00"),
        1_782_907_200 + 4 * 3600
    );
    // a date alone is local midnight; Z is UTC whatever the zone
    assert_eq!(
        expires("JST-9", "2026-11-26"),
        noon_utc - 12 * 3600 - 9 * 3600
    );
    assert_eq!(expires("JST-9", "2026-11-26T12:00:00Z"), noon_utc);
}

/// `serve` under a low open-file limit, with `extra` config appended; returns the running
/// process and its config file's directory.
pub(crate) fn serve_with(nofile: Option<u32>, extra: &str) -> (Serving, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("ironboot.conf");
    let state = dir.path().join("state");
    let extra = extra.to_string();
    let serving = start_serve(|api, boot| {
        std::fs::write(
            &conf,
            format!(
                "[DEFAULT]\nstate_path = {}\n[api]\nport = {api}\n[httpboot]\nport = {boot}\n{extra}",
                state.display()
            ),
        )
        .unwrap();
        let mut cmd = Command::new("bash");
        let limit = nofile.map_or(String::new(), |n| format!("ulimit -n {n} && "));
        cmd.env_remove("IRONBOOT_CONFIG")
            .arg("-c")
            .arg(format!("{limit}exec \"$0\" --config \"$1\" serve"))
            .arg(ironboot_bin())
            .arg(&conf);
        cmd
    });
    (serving, dir)
}

pub(crate) fn sigterm(child: &std::process::Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
}

/// Regression: with the open-file limit at 1,024, 1,100 idle connections to the boot port
/// made both listeners stop accepting ("Too many open files"); the API and /healthz timed
/// out too. Now each listener has a connection cap below the limit, with a reserve.
#[test]
fn regression_idle_boot_connections_starve_the_api() {
    let (serving, _dir) = serve_with(
        Some(256),
        "[httpboot]\nheader_timeout = 3600\nkeepalive_timeout = 3600\n",
    );
    let mut flood = Vec::new();
    for _ in 0..300 {
        match std::net::TcpStream::connect(&serving.boot) {
            Ok(c) => flood.push(c),
            Err(e) => panic!("connect: {e}"),
        }
    }
    let health = reqwest::blocking::Client::new()
        .get(format!("http://{}/healthz", serving.api))
        .timeout(Duration::from_secs(10))
        .send()
        .expect("the API answers during a flood of the boot port");
    assert_eq!(health.status(), reqwest::StatusCode::OK);
    let created = reqwest::blocking::Client::new()
        .post(format!("http://{}/v1/nodes", serving.api))
        .header("content-type", "application/json")
        .body(r#"{"name": "during-flood"}"#)
        .timeout(Duration::from_secs(10))
        .send()
        .unwrap();
    assert_eq!(
        created.status(),
        reqwest::StatusCode::CREATED,
        "the database still works"
    );
    let metrics = reqwest::blocking::get(format!("http://{}/metrics", serving.api))
        .unwrap()
        .text()
        .unwrap();
    let refused: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ironboot_connections_refused_total{listener=\"boot\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0);
    assert!(refused > 0.0, "refused connections are counted:\n{metrics}");
    drop(flood);
    sigterm(&serving.child);
    let (status, log) = serving.wait(Duration::from_secs(20));
    assert!(status.success(), "{log}");
    assert!(
        log.contains("open-file limit") && log.contains("soft=256"),
        "{log}"
    );
}

/// Regression: a connection that sent half a request head, or nothing at all, stayed open
/// forever. Now `header_timeout` closes it.
#[test]
fn regression_half_sent_requests_stay_open_forever() {
    use std::io::{Read, Write};
    let (serving, _dir) = serve_with(
        None,
        "[httpboot]\nheader_timeout = 1\n[api]\nheader_timeout = 1\n",
    );
    for addr in [&serving.boot, &serving.api] {
        let mut idle = std::net::TcpStream::connect(addr).unwrap();
        let mut half = std::net::TcpStream::connect(addr).unwrap();
        half.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n")
            .unwrap();
        for conn in [&mut idle, &mut half] {
            conn.set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut buf = Vec::new();
            let start = Instant::now();
            // EOF, or a 408 and then EOF, well before the 10 s read timeout
            conn.read_to_end(&mut buf)
                .unwrap_or_else(|e| panic!("{addr}: not closed by the header timeout: {e}"));
            assert!(start.elapsed() < Duration::from_secs(8), "{addr}");
        }
    }
    sigterm(&serving.child);
    serving.wait(Duration::from_secs(20));
}

/// Regression: a SIGTERM with one half-sent request open kept the process alive until the
/// client gave up. Now `graceful_shutdown_timeout` bounds the wait.
#[test]
fn regression_sigterm_waits_for_a_half_sent_request() {
    use std::io::Write;
    let (serving, _dir) = serve_with(
        None,
        "[DEFAULT]\ngraceful_shutdown_timeout = 1\n[httpboot]\nheader_timeout = 3600\n",
    );
    let mut half = std::net::TcpStream::connect(&serving.boot).unwrap();
    half.write_all(b"GET /boot.ipxe HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // the request reached the server: a second, complete one on another connection is
    // answered, so the server is accepting and reading
    let ok = reqwest::blocking::get(format!("http://{}/boot.ipxe", serving.boot)).unwrap();
    assert!(ok.status().is_success());
    let start = Instant::now();
    sigterm(&serving.child);
    let (status, log) = serving.wait(Duration::from_secs(15));
    assert!(status.success(), "{log}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "stopped after {:?}",
        start.elapsed()
    );
    drop(half);
}

/// Runs a copy of `scripts/test.sh` whose services, `cargo` and (optionally) e2e script are
/// stand-ins that succeed at once, so only the script's own bookkeeping is under test.
/// `e2e`: None = no e2e script, Some(false) = present but not executable, Some(true) = an
/// executable one that passes. Returns the exit status and the output.
fn run_test_sh_with_stand_ins(e2e: Option<bool>, skip_e2e: bool) -> (ExitStatus, String) {
    use std::os::unix::fs::PermissionsExt;
    let root = tempfile::tempdir().unwrap();
    let scripts = root.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let real = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test.sh"),
    )
    .unwrap();
    let exec = |path: &std::path::Path, text: &str| {
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    exec(&scripts.join("test.sh"), &real);
    // Every variable the script expects a service to export.
    let mut names: Vec<String> = real
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| {
            [
                "SWIFT_AIO_",
                "IRONBOOT_TEST_",
                "KEYSTONE_AIO_",
                "GLANCE_AIO_",
                "ST_",
                "PGAIO_",
            ]
            .iter()
            .any(|p| w.starts_with(p))
        })
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    let venv = root.path().join("venv");
    std::fs::create_dir_all(venv.join("bin")).unwrap();
    exec(&venv.join("bin/python"), "#!/bin/sh\nexit 0\n");
    let mut env_lines = String::new();
    for n in &names {
        let value = match n.as_str() {
            "SWIFT_AIO_VENV" => venv.display().to_string(),
            "IRONBOOT_TEST_DIR"
            | "IRONBOOT_TEST_SKIP_APT"
            | "IRONBOOT_TEST_SKIP_E2E"
            | "IRONBOOT_TEST_TIMEOUT"
            | "IRONBOOT_TEST_PYTHON" => continue,
            _ => "stand-in".to_string(),
        };
        env_lines.push_str(&format!("echo \"export {n}='{value}'\"\n"));
    }
    let service = format!(
        "#!/bin/sh\n# a stand-in service: start/stop/install succeed, env prints every variable\n\
         case \"$1\" in env|keystone-proxy) {{\n{env_lines}}} ;; *) exit 0 ;; esac\n"
    );
    for s in [
        "swift-aio.sh",
        "postgres-aio.sh",
        "keystone-aio.sh",
        "glance-aio.sh",
    ] {
        exec(&scripts.join(s), &service);
    }
    match e2e {
        None => {}
        Some(executable) => {
            let path = scripts.join("e2e-ipxe.sh");
            exec(&path, "#!/bin/sh\necho '1 passed, 0 failed'\n");
            if !executable {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            }
        }
    }
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    exec(
        &bin.join("cargo"),
        "#!/bin/sh\necho 'test result: ok. 1 passed; 0 failed; 0 ignored; 0 measured'\n",
    );
    let mut cmd = Command::new("bash");
    cmd.arg(scripts.join("test.sh"))
        .current_dir(root.path())
        .env(
            "PATH",
            format!("{}:{}", bin.display(), std::env::var("PATH").unwrap()),
        )
        .env("IRONBOOT_TEST_DIR", root.path().join("td"))
        .env("IRONBOOT_TEST_SKIP_APT", "1")
        .env_remove("CARGO_TERM_COLOR");
    if skip_e2e {
        cmd.env("IRONBOOT_TEST_SKIP_E2E", "1");
    } else {
        cmd.env_remove("IRONBOOT_TEST_SKIP_E2E");
    }
    let (status, out, err) = output_within(&mut cmd, Duration::from_secs(60));
    (status.expect("test.sh finishes"), format!("{out}{err}"))
}

/// Regression: `scripts/test.sh` counted a missing or non-executable `scripts/e2e-ipxe.sh`
/// as skipped, and so the run as passing. Only `IRONBOOT_TEST_SKIP_E2E=1` may skip it.
#[test]
fn regression_test_sh_counts_a_missing_e2e_as_passing() {
    let (status, out) = run_test_sh_with_stand_ins(Some(true), false);
    assert!(status.success(), "the stand-ins pass:\n{out}");
    assert!(out.contains("RESULT: OK"), "{out}");

    let (status, out) = run_test_sh_with_stand_ins(None, false);
    assert!(
        !status.success(),
        "a missing e2e script fails the run:\n{out}"
    );
    assert!(
        out.contains("NOT RUN") && out.contains("e2e-ipxe.sh is missing"),
        "{out}"
    );

    let (status, out) = run_test_sh_with_stand_ins(Some(false), false);
    assert!(
        !status.success(),
        "a non-executable e2e script fails the run:\n{out}"
    );
    assert!(out.contains("is not executable"), "{out}");

    let (status, out) = run_test_sh_with_stand_ins(None, true);
    assert!(status.success(), "skipping on request passes:\n{out}");
    assert!(out.contains("ON REQUEST"), "{out}");
}
