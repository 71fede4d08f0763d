//! Fills a database with N nodes whose deploy target is prepared with Swift references, for
//! `bench/boot-path.sh`. The prepare step's Swift HEAD checks are skipped: the benchmark
//! measures the boot path, which never calls Swift.
//!
//! Usage: bench_seed CONFIG N MACS_FILE   (writes one pxelinux.cfg path per line)

use std::io::Write;

use ironboot::node::{BootMode, DriverInfo, InstanceInfo, Mac, PreparedBoot, State, Target};
use ironboot::store::{NewNode, Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let config = args.next().expect("CONFIG");
    let n: u32 = args.next().expect("N").parse().expect("N is a number");
    let out = args.next().expect("MACS_FILE");
    let loaded = ironboot::config::load(Some(std::path::Path::new(&config)))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = Store::open(&loaded.settings.database, 8).await.unwrap();
    let mut paths = std::fs::File::create(&out).unwrap();
    let kernel = "swift://images/deploy/vmlinuz".to_string();
    let ramdisk = "swift://images/deploy/initrd.img".to_string();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let store = store.clone();
            let (kernel, ramdisk) = (kernel.clone(), ramdisk.clone());
            tokio::spawn(async move {
                let b = i.to_be_bytes();
                let mac = Mac::parse(&format!(
                    "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                    b[0], b[1], b[2], b[3]
                ))
                .unwrap();
                let mut node = store
                    .create_node(NewNode {
                        name: Some(format!("bench-{i}")),
                        macs: vec![mac],
                        boot_mode: BootMode::Bios,
                        driver_info: DriverInfo {
                            deploy_kernel: Some(kernel.clone()),
                            deploy_ramdisk: Some(ramdisk.clone()),
                            ..Default::default()
                        },
                        instance_info: InstanceInfo::default(),
                    })
                    .await
                    .unwrap();
                node.target = Target::Deploy;
                node.state = State::Ready;
                node.prepared = Some(PreparedBoot {
                    target: Target::Deploy,
                    boot_mode: BootMode::Bios,
                    kernel: Some(kernel),
                    ramdisk: Some(ramdisk),
                    kernel_args: "nofb vga=normal console=ttyS0".into(),
                });
                store.update_node(&node).await.unwrap();
                mac
            })
        })
        .collect();
    for t in tasks {
        writeln!(paths, "/pxelinux.cfg/{}", t.await.unwrap().hexhyp()).unwrap();
    }
    store.close().await;
}
