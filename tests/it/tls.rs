//! `[glance] cafile` and `insecure` against real Keystone and Glance behind TLS: a TLS
//! terminator (`support/tls_terminator.py`, a stand-in for the load balancer that usually
//! terminates TLS) with a certificate from a throwaway CA made by `openssl`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::support::glance_env::glance_env;
use crate::support::server::{Db, TestServer, random_mac};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (apt package openssl) must be installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.pem`) and a certificate for 127.0.0.1 that it signed (`srv.pem`, `srv.key`).
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=ironboot test CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext",
        ],
    );
}

/// A running terminator; killed (by PID) when dropped.
struct Terminator {
    child: Child,
    url: String,
}

impl Terminator {
    fn start(dir: &Path, upstream: &str) -> Terminator {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/support/tls_terminator.py");
        let mut child = Command::new(crate::support::python())
            .arg(script)
            .arg(dir.join("srv.pem"))
            .arg(dir.join("srv.key"))
            .arg(upstream)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the TLS terminator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .strip_prefix("PORT ")
            .unwrap_or_else(|| panic!("the terminator said {line:?}"))
            .trim()
            .to_string();
        Terminator {
            child,
            url: format!("https://127.0.0.1:{port}"),
        }
    }
}

impl Drop for Terminator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn keystone_and_glance_over_tls_need_the_cafile_or_insecure() {
    let env = glance_env().await;
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let keystone = Terminator::start(dir.path(), &env.keystone_url);
    let glance = Terminator::start(dir.path(), &env.glance_url);
    let token = env.token(&env.service).await;
    let image = env
        .image_with(&token, b"a kernel behind TLS", json!({}))
        .await;
    let ca = dir.path().join("ca.pem");

    let prepare = |extra: String| {
        let env = env.clone();
        let keystone = keystone.url.clone();
        let glance = glance.url.clone();
        let image = image.clone();
        async move {
            let conf = env.ironboot_config_as(
                &env.service,
                Some(&format!("{keystone}/v3")),
                &format!("endpoint_override = {glance}\n{extra}"),
            );
            let s = TestServer::start(Db::Sqlite, &conf).await;
            let (_, n) = s
                .call(
                    Method::POST,
                    "/v1/nodes",
                    Some(json!({"macs": [random_mac()], "driver_info": {"deploy_kernel": image, "deploy_ramdisk": image}})),
                )
                .await;
            let got = s.set_target(n["uuid"].as_str().unwrap(), "deploy").await;
            s.stop().await;
            got
        }
    };
    // with the CA: Keystone's token and Glance's answer over TLS
    let (st, n) = prepare(format!("cafile = {}\n", ca.display())).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    assert_eq!(n["state"], "ready", "{n}");

    // without it, the system's CAs do not know this one: a clear error, no hang
    let (st, n) = prepare(String::new()).await;
    assert_eq!(st, StatusCode::BAD_GATEWAY, "{n}");
    assert_eq!(n["error"]["code"], "keystone_unreachable", "{n}");
    let m = n["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("certificate") || m.contains("UnknownIssuer"),
        "{m}"
    );

    // insecure: accepted without verification
    let (st, n) = prepare("insecure = true\n".into()).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{n}");
    assert_eq!(n["state"], "ready", "{n}");

    env.delete_images(&token, &[&image]).await;
}
