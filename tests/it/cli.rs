//! The `ironboot` binary: exit codes, `serve` start-up and shutdown, and the `node`
//! commands against a running server.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::ironboot_bin;
use crate::support::server::{Db, TestServer, random_mac};

fn ironboot() -> Command {
    let mut c = Command::new(ironboot_bin());
    c.env_remove("IRONBOOT_CONFIG")
        .env_remove("IRONBOOT_URL")
        .env_remove("IRONBOOT_TOKEN_FILE");
    c
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("pxe.ipxe_config_template: template node.ipxe:")
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
    let (api, boot) = (free_port(), free_port());
    // Ports are the only thing set, through a config file nobody can read; everything else
    // is a default.
    let conf = home.path().join("ports.conf");
    std::fs::write(
        &conf,
        format!("[api]\nport = {api}\n[httpboot]\nport = {boot}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&conf, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let as_root = std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false);
    let mut cmd = if as_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(ironboot_bin());
        c
    } else {
        Command::new(ironboot_bin())
    };
    let state = home.path().join("xdg-state");
    let mut child = cmd
        .env_remove("IRONBOOT_CONFIG")
        .env("HOME", home.path())
        .env("XDG_STATE_HOME", &state)
        .arg("--config")
        .arg(&conf)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let healthy = loop {
        if let Ok(r) = reqwest::blocking::get(format!("http://127.0.0.1:{api}/healthz")) {
            break r.status().is_success();
        }
        assert!(Instant::now() < deadline, "serve did not come up");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(healthy);
    let master = reqwest::blocking::get(format!("http://127.0.0.1:{boot}/boot.ipxe"))
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
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "serve did not stop within 10 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut log = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut log).unwrap();
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
    let out = tokio::task::spawn_blocking(|| {
        ironboot()
            .args([
                "node",
                "--url",
                &format!("http://127.0.0.1:{}", free_port()),
                "list",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is `ironboot serve` running?"));
}
