//! The `ironboot` binary: exit codes, `serve` start-up and shutdown, and the `node`
//! commands against a running server.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, ExitStatus, Stdio};
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
struct Serving {
    child: Child,
    api: String,
    boot: String,
    log: std::sync::Arc<std::sync::Mutex<String>>,
    reader: std::thread::JoinHandle<()>,
}

impl Serving {
    /// Waits for the process to exit (after a signal) and returns its status and log.
    fn wait(mut self, within: Duration) -> (ExitStatus, String) {
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
fn start_serve(mut command: impl FnMut(u16, u16) -> Command) -> Serving {
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
        std::thread::sleep(Duration::from_millis(100));
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
