//! Rendered scripts are compared with golden files in `tests/golden/` (update them with
//! `UPDATE_EXPECT=1 cargo test` and review the diff).

use expect_test::expect_file;

use super::*;

const SWIFT_KERNEL: &str = "http://10.0.2.2:28080/v1/AUTH_test/images/vmlinuz?temp_url_sig=28ab1d8841beb2ee68a7e952d5738d550e8f1bed82b947acbe4620689d7fb4ae&temp_url_expires=1795694400";
const SWIFT_INITRD: &str = "http://10.0.2.2:28080/v1/AUTH_test/images/initrd%20v2.img?temp_url_sig=03a6e2f2a6be61ae41046d9a5c60124fd651fef48fa5ab02d215117edd803f37&temp_url_expires=1795694400";

fn ctx(target: &str, boot_mode: &str) -> NodeContext {
    let netboot = target != "local";
    let (k, r) = if target == "instance" {
        ("kernel", "ramdisk")
    } else {
        ("deploy_kernel", "deploy_ramdisk")
    };
    NodeContext {
        node: ScriptNode {
            uuid: "1be26c0b-03f2-4d2e-ae87-c02d7f33c123".into(),
            name: Some("node-1".into()),
        },
        mac: "52-54-00-12-34-56".into(),
        bootif: "52-54-00-12-34-56".into(),
        target: target.into(),
        boot_mode: boot_mode.into(),
        kernel: netboot.then(|| ScriptImage {
            name: k.into(),
            url: SWIFT_KERNEL.into(),
        }),
        initrd: netboot.then(|| ScriptImage {
            name: r.into(),
            url: SWIFT_INITRD.into(),
        }),
        kernel_args: "nofb vga=normal console=ttyS0".into(),
        timeout_ms: if boot_mode == "bios" { 30_000 } else { 0 },
        attempts: 6,
        delays: retry_delays(b"1be26c0b-03f2-4d2e-ae87-c02d7f33c123", 6, 30),
        expires_at: "2026-11-26T12:00:00Z".into(),
    }
}

fn templates() -> Templates {
    Templates::new(None, None).unwrap()
}

#[test]
fn master_script() {
    expect_file!["../../tests/golden/boot.ipxe"].assert_eq(
        &templates()
            .master(&MasterContext {
                fallback_script: None,
            })
            .unwrap(),
    );
}

#[test]
fn master_script_with_fallback() {
    let t = templates()
        .master(&MasterContext {
            fallback_script: Some("inspector.ipxe".into()),
        })
        .unwrap();
    expect_file!["../../tests/golden/boot-fallback.ipxe"].assert_eq(&t);
    // Ironic's single-| bug is not reproduced: every operator is a whole || word.
    for line in t.lines().filter(|l| !l.starts_with('#')) {
        assert!(
            !line.split_whitespace().any(|w| w == "|"),
            "single | in {line:?}"
        );
    }
}

#[test]
fn deploy_bios_with_timeout() {
    expect_file!["../../tests/golden/node-deploy-bios.ipxe"]
        .assert_eq(&templates().node(&ctx("deploy", "bios")).unwrap());
}

#[test]
fn instance_uefi_without_timeout() {
    expect_file!["../../tests/golden/node-instance-uefi.ipxe"]
        .assert_eq(&templates().node(&ctx("instance", "uefi")).unwrap());
}

#[test]
fn local_boot() {
    expect_file!["../../tests/golden/node-local-bios.ipxe"]
        .assert_eq(&templates().node(&ctx("local", "bios")).unwrap());
    expect_file!["../../tests/golden/node-local-uefi.ipxe"]
        .assert_eq(&templates().node(&ctx("local", "uefi")).unwrap());
}

#[test]
fn kernel_line_names_its_initrd_and_the_mac() {
    let script = templates().node(&ctx("deploy", "uefi")).unwrap();
    let kernel = script.lines().find(|l| l.starts_with("kernel ")).unwrap();
    assert!(
        kernel.starts_with("kernel --name deploy_kernel "),
        "{kernel}"
    );
    assert!(
        kernel.contains(&format!(" {SWIFT_KERNEL} ")),
        "URL written as is, & included: {kernel}"
    );
    assert!(
        kernel.contains(" initrd=deploy_ramdisk BOOTIF=01-52-54-00-12-34-56 || goto retry"),
        "{kernel}"
    );
    assert!(
        !kernel.contains("--timeout"),
        "no --timeout when ipxe_timeout = 0"
    );
    let initrd = script.lines().find(|l| l.starts_with("initrd ")).unwrap();
    assert_eq!(
        initrd,
        format!("initrd --name deploy_ramdisk {SWIFT_INITRD} || goto retry")
    );
}

#[test]
fn mirror_configs_let_ipxe_fill_in_the_mac() {
    let mut c = ctx("deploy", "bios");
    c.bootif = "${mac:hexhyp}".into();
    let script = templates().node(&c).unwrap();
    assert!(
        script.contains(" BOOTIF=01-${mac:hexhyp} || goto retry"),
        "{script}"
    );
}

#[test]
fn unsafe_urls_are_refused_before_rendering() {
    let t = templates();
    for (url, why) in [
        ("http://h/a b", "whitespace"),
        ("http://h/${x}", "expand"),
        ("#http://h/", "comment"),
        ("", "empty"),
        ("http://h/\tk", "whitespace"),
    ] {
        let mut c = ctx("deploy", "bios");
        c.initrd.as_mut().unwrap().url = url.into();
        let err = t.node(&c).unwrap_err();
        assert!(
            matches!(&err, IpxeError::Unsafe { field, .. } if field == "initrd"),
            "{err}"
        );
        assert!(err.to_string().contains(why), "{url:?}: {err}");
    }
    let err = t
        .master(&MasterContext {
            fallback_script: Some("a b".into()),
        })
        .unwrap_err();
    assert!(err.to_string().contains("ipxe.fallback_script"));
    // a # inside a URL is not a comment
    assert!(check_url("k", "http://h/a#b").is_ok());
}

#[test]
fn retry_delays_back_off_with_per_node_jitter() {
    let a = retry_delays(b"node-a", 8, 30);
    assert_eq!(a.len(), 7);
    for (i, d) in a.iter().enumerate() {
        let ceiling = 2u32.pow(i as u32 + 1).min(30);
        assert!(
            (ceiling / 2..=ceiling).contains(d),
            "attempt {}: {d} not in {}..={ceiling}",
            i + 1,
            ceiling / 2
        );
    }
    assert_eq!(a, retry_delays(b"node-a", 8, 30), "deterministic per node");
    let spread: std::collections::BTreeSet<Vec<u32>> = (0..50)
        .map(|i| retry_delays(format!("node-{i}").as_bytes(), 8, 30))
        .collect();
    assert!(
        spread.len() > 40,
        "nodes get different schedules: only {} distinct",
        spread.len()
    );
    assert!(retry_delays(b"x", 1, 30).is_empty());
    assert!(retry_delays(b"x", 50, 1).iter().all(|d| *d <= 1));
    assert!(
        retry_delays(b"x", 50, 30).iter().all(|d| *d <= 30),
        "never above retry_max_delay"
    );
}

#[test]
fn custom_templates_are_checked_at_start() {
    let err = Templates::new(None, Some("kernel {{ no_such_variable }}".into())).unwrap_err();
    assert!(err.to_string().starts_with("template node.ipxe:"), "{err}");
    let err = Templates::new(Some("{% if %}".into()), None).unwrap_err();
    assert!(err.to_string().starts_with("template boot.ipxe:"), "{err}");
    let custom = Templates::new(
        None,
        Some("#!ipxe\necho {{ node.uuid }} {{ target }}\n".into()),
    )
    .unwrap();
    assert_eq!(
        custom.node(&ctx("deploy", "bios")).unwrap(),
        "#!ipxe\necho 1be26c0b-03f2-4d2e-ae87-c02d7f33c123 deploy\n"
    );
}

/// Regression (found by the script fuzzer): 2048 bytes of kernel arguments were accepted,
/// and the script appends `initrd=` and `BOOTIF=` after them; x86 kernels keep 2047 bytes
/// of command line and iPXE cut the rest, so the initrd was lost. The longest arguments
/// accepted now leave room for both, with the longest image name and any MAC.
#[test]
fn regression_long_kernel_args_push_initrd_off_the_command_line() {
    let t = templates();
    for target in ["deploy", "instance"] {
        let mut c = ctx(target, "uefi");
        c.kernel_args = "a".repeat(crate::node::MAX_KERNEL_ARGS);
        c.mac = "ff-ff-ff-ff-ff-fe".into();
        c.bootif = c.mac.clone();
        let script = t.node(&c).unwrap();
        let line = script
            .lines()
            .find(|l| l.starts_with("kernel "))
            .expect("a kernel line");
        let url = &c.kernel.as_ref().unwrap().url;
        let cmdline = line
            .split_once(url.as_str())
            .unwrap()
            .1
            .trim_start()
            .trim_end_matches("|| goto retry")
            .trim_end();
        assert!(
            cmdline.ends_with(&format!("BOOTIF=01-{}", c.mac)),
            "{cmdline}"
        );
        assert!(cmdline.len() <= 2047, "{target}: {} bytes", cmdline.len());
    }
    assert!(
        crate::node::validate_kernel_args("k", &"a".repeat(crate::node::MAX_KERNEL_ARGS + 1))
            .is_err()
    );
}
