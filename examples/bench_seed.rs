//! Fills a database with N nodes whose deploy target is prepared with Swift references, for
//! `bench/boot-path.sh`, through the service's own operations. Swift is not called: the
//! nodes are prepared through an http(s) source first and then pointed at Swift objects by
//! the store, because the benchmark measures the boot path, which never calls Swift.
//!
//! Usage: bench_seed CONFIG N MACS_FILE   (writes one pxelinux.cfg path per line)

use std::io::Write;
use std::sync::Arc;

use ironboot::clock::SystemClock;
use ironboot::node::{PreparedImage, SourceKind};
use serde_json::json;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let config = args.next().expect("CONFIG");
    let n: u32 = args.next().expect("N").parse().expect("N is a number");
    let out = args.next().expect("MACS_FILE");
    let loaded = ironboot::config::load(Some(std::path::Path::new(&config)))
        .unwrap_or_else(|e| panic!("{e}"));
    let service = ironboot::cli::serve::build_service(&loaded.settings, Arc::new(SystemClock))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut paths = std::fs::File::create(&out).unwrap();
    let account = loaded
        .settings
        .swift
        .as_ref()
        .and_then(|s| {
            let account = s.configured_account.as_ref()?;
            Some(format!("/{}/{account}", s.api_version))
        })
        .expect("the benchmark config sets up Swift with [glance] swift_account");
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let service = service.clone();
            let account = account.clone();
            tokio::spawn(async move {
                let b = i.to_be_bytes();
                let mac = format!("52:54:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3]);
                let node = service
                    .create_node(&json!({
                        "name": format!("bench-{i}"),
                        "macs": [mac],
                        "driver_info": {
                            "deploy_kernel": "http://127.0.0.1/deploy/vmlinuz",
                            "deploy_ramdisk": "http://127.0.0.1/deploy/initrd.img",
                        },
                    }))
                    .await
                    .unwrap();
                let mut node = service
                    .set_boot(&node.uuid.to_string(), ironboot::node::Target::Deploy)
                    .await
                    .unwrap();
                // The same snapshot a swift-mode prepare stores, without its HEAD checks.
                let prepared = node.prepared.as_mut().unwrap();
                for (image, object) in [
                    (&mut prepared.kernel, "deploy/vmlinuz"),
                    (&mut prepared.ramdisk, "deploy/initrd.img"),
                ] {
                    *image = Some(PreparedImage {
                        reference: format!("swift://images/{object}"),
                        source: SourceKind::Swift,
                        location: format!("{account}/images/{object}"),
                        checksum: None,
                    });
                }
                prepared.kernel_args = "nofb vga=normal console=ttyS0".into();
                service.store().update_node(&node).await.unwrap();
                node.macs[0]
            })
        })
        .collect();
    for t in tasks {
        writeln!(paths, "/pxelinux.cfg/{}", t.await.unwrap().hexhyp()).unwrap();
    }
    service.close().await;
}
