//! Measures the hash ring against Ironic's and prints the tables of `docs/architecture.md`
//! ("The hash ring") as markdown: balance, movement when a conductor joins or leaves, and
//! lookup cost, for 3 to 50 conductors and 10,000 and 100,000 nodes.
//!
//! Candidates, all given the same hosts and nodes:
//! * `rendezvous`: `ironboot::ring::Ring`, the ring ironboot uses.
//! * `ironic 2^5`: tooz's `HashRing` as Ironic builds it (`tooz/hashring.py`): md5, 2^5
//!   partitions per host (`hash_partition_exponent = 5`, Ironic's default), a node looked up
//!   by the md5 of its uuid's canonical string.
//! * `ironic 2^8`: the same with `hash_partition_exponent = 8`.
//!
//! Hosts are `conductor-01.example.org`, …; nodes are v4 uuids from splitmix64 with a fixed
//! seed, so every run measures the same inputs. Timings are the best of several runs on one
//! thread.
//!
//! Usage: cargo run --release --example ring_balance

use std::hint::black_box;
use std::time::{Duration, Instant};

use ironboot::ring::Ring;
use md5::{Digest, Md5};
use uuid::Uuid;

const CONDUCTORS: [usize; 5] = [3, 5, 10, 20, 50];
const NODES: [usize; 2] = [10_000, 100_000];
/// Joins and leaves measured per row.
const TRIALS: usize = 5;
const SEED: u64 = 0x1b00_75ee_d000_0001;
/// Each timing is the best of this many runs.
const RUNS: usize = 15;

trait Owner {
    fn owner(&self, node: &Uuid) -> Option<&str>;
}

impl Owner for Ring {
    fn owner(&self, node: &Uuid) -> Option<&str> {
        Ring::owner(self, node)
    }
}

/// tooz's `HashRing` (what Ironic uses), ported line by line: host `h` gets the points
/// md5(h·h), md5(h·h·h), … (one incremental md5 over repeated names), each read as a 128-bit
/// big-endian integer; a node goes to the first point strictly above md5(its uuid string),
/// wrapping to the first point (`bisect.bisect`).
struct Tooz {
    points: Vec<(u128, usize)>,
    hosts: Vec<String>,
}

impl Tooz {
    fn new(hosts: &[String], exponent: u32) -> Tooz {
        let mut hosts = hosts.to_vec();
        hosts.sort();
        hosts.dedup();
        let mut points = Vec::with_capacity(hosts.len() << exponent);
        for (i, host) in hosts.iter().enumerate() {
            let mut hash = Md5::new();
            hash.update(host.as_bytes());
            for _ in 0..(1u32 << exponent) {
                hash.update(host.as_bytes());
                points.push((u128::from_be_bytes(hash.clone().finalize().into()), i));
            }
        }
        points.sort_unstable();
        // A dict in tooz: one host per point (a collision of 128-bit md5s never happens here).
        points.dedup_by_key(|p| p.0);
        Tooz { points, hosts }
    }
}

impl Owner for Tooz {
    fn owner(&self, node: &Uuid) -> Option<&str> {
        if self.points.is_empty() {
            return None;
        }
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let data = node.hyphenated().encode_lower(&mut buf);
        let h = u128::from_be_bytes(Md5::digest(data.as_bytes()).into());
        let at = self.points.partition_point(|p| p.0 <= h);
        let (_, i) = self.points[if at == self.points.len() { 0 } else { at }];
        Some(&self.hosts[i])
    }
}

#[derive(Clone, Copy)]
enum Candidate {
    Rendezvous,
    Ironic(u32),
}

impl Candidate {
    const ALL: [Candidate; 3] = [
        Candidate::Rendezvous,
        Candidate::Ironic(5),
        Candidate::Ironic(8),
    ];

    fn name(self) -> String {
        match self {
            Candidate::Rendezvous => "rendezvous".into(),
            Candidate::Ironic(e) => format!("ironic 2^{e}"),
        }
    }

    fn build(self, hosts: &[String]) -> Box<dyn Owner> {
        match self {
            Candidate::Rendezvous => Box::new(Ring::new(hosts)),
            Candidate::Ironic(e) => Box::new(Tooz::new(hosts, e)),
        }
    }
}

fn uuids(n: usize) -> Vec<Uuid> {
    let mut state = SEED;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    (0..n)
        .map(|_| {
            let mut bytes = [0u8; 16];
            bytes[..8].copy_from_slice(&next().to_be_bytes());
            bytes[8..].copy_from_slice(&next().to_be_bytes());
            uuid::Builder::from_random_bytes(bytes).into_uuid()
        })
        .collect()
}

/// 100000 → "100,000".
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Whether the CPU has the SHA-256 instructions that `sha2` uses when it finds them.
fn sha_extensions() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    if std::arch::is_x86_feature_detected!("sha") {
        return "yes";
    }
    #[cfg(target_arch = "aarch64")]
    if std::arch::is_aarch64_feature_detected!("sha2") {
        return "yes";
    }
    "no"
}

fn host(i: usize) -> String {
    format!("conductor-{i:02}.example.org")
}

fn hosts(n: usize) -> Vec<String> {
    (1..=n).map(host).collect()
}

fn owners<'a>(ring: &'a dyn Owner, nodes: &[Uuid]) -> Vec<&'a str> {
    nodes.iter().map(|n| ring.owner(n).unwrap()).collect()
}

struct Balance {
    max: f64,
    min: f64,
    sd: f64,
}

fn balance(hosts: &[String], owners: &[&str]) -> Balance {
    let loads: Vec<f64> = hosts
        .iter()
        .map(|h| owners.iter().filter(|o| **o == h.as_str()).count() as f64)
        .collect();
    let mean = owners.len() as f64 / hosts.len() as f64;
    let var = loads.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / hosts.len() as f64;
    Balance {
        max: loads.iter().cloned().fold(f64::MIN, f64::max) / mean,
        min: loads.iter().cloned().fold(f64::MAX, f64::min) / mean,
        sd: var.sqrt() / mean,
    }
}

/// Fractions of nodes moved in each trial, and the nodes that moved between two hosts
/// neither of which was the one that joined or left (0 for a consistent ring).
struct Movement {
    fractions: Vec<f64>,
    stray: usize,
}

impl Movement {
    fn cell(&self) -> String {
        let mean = self.fractions.iter().sum::<f64>() / self.fractions.len() as f64;
        let min = self.fractions.iter().cloned().fold(f64::MAX, f64::min);
        let max = self.fractions.iter().cloned().fold(f64::MIN, f64::max);
        format!("{mean:.4} ({min:.4}–{max:.4}), {} elsewhere", self.stray)
    }
}

fn joins(c: Candidate, base: &[String], before: &[&str], nodes: &[Uuid]) -> Movement {
    let n = base.len();
    let mut m = Movement {
        fractions: vec![],
        stray: 0,
    };
    for t in 0..TRIALS {
        let joiner = host(n + 1 + t);
        let mut after_hosts = base.to_vec();
        after_hosts.push(joiner.clone());
        let ring = c.build(&after_hosts);
        let after = owners(ring.as_ref(), nodes);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
        let (mut count, mut stray) = (0, 0);
        for (_, a) in moved {
            count += 1;
            stray += usize::from(*a != joiner);
        }
        m.fractions.push(count as f64 / nodes.len() as f64);
        m.stray += stray;
    }
    m
}

fn leaves(c: Candidate, base: &[String], before: &[&str], nodes: &[Uuid]) -> Movement {
    let n = base.len();
    let trials = TRIALS.min(n);
    let mut m = Movement {
        fractions: vec![],
        stray: 0,
    };
    for t in 0..trials {
        let leaver = &base[t * n / trials];
        let after_hosts: Vec<String> = base.iter().filter(|h| *h != leaver).cloned().collect();
        let ring = c.build(&after_hosts);
        let after = owners(ring.as_ref(), nodes);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a);
        let (mut count, mut stray) = (0, 0);
        for (b, _) in moved {
            count += 1;
            stray += usize::from(*b != leaver);
        }
        m.fractions.push(count as f64 / nodes.len() as f64);
        m.stray += stray;
    }
    m
}

/// The best of `runs` timings of `f`.
fn best(runs: usize, mut f: impl FnMut()) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn header(title: &str, first: &str, extra: &[&str]) {
    println!("{title}\n");
    let mut cols = vec![first.to_string()];
    cols.extend(extra.iter().map(|s| s.to_string()));
    cols.extend(Candidate::ALL.iter().map(|c| c.name()));
    println!("| {} |", cols.join(" | "));
    println!("|{}", "---:|".repeat(cols.len()));
}

/// The tooz port against values computed by tooz's algorithm in Python (hashlib.md5):
/// conductor-01..05, the first 10,000 nodes.
fn check_tooz_port(nodes: &[Uuid]) {
    let ring = Tooz::new(&hosts(5), 5);
    let owned = owners(&ring, &nodes[..10_000]);
    let loads: Vec<usize> = hosts(5)
        .iter()
        .map(|h| owned.iter().filter(|o| **o == h.as_str()).count())
        .collect();
    assert_eq!(loads, TOOZ_LOADS, "the tooz port disagrees with tooz");
}

const TOOZ_LOADS: [usize; 5] = [1943, 2246, 2055, 1655, 2101];

fn main() {
    let all_nodes = uuids(*NODES.iter().max().unwrap_or(&0));
    check_tooz_port(&all_nodes);

    println!("### Measurements\n");
    println!(
        "Hosts `conductor-01.example.org`, …; nodes are v4 uuids from splitmix64 (seed \
         {SEED:#x}). `rendezvous` is `ironboot::ring::Ring`; `ironic 2^5` is tooz's HashRing \
         as Ironic builds it (md5, 2^5 partitions per host, the default), `ironic 2^8` the same \
         with `hash_partition_exponent = 8`. Binomial stddev/mean, sqrt((n-1)/nodes), is the \
         spread of nodes placed independently at random: no hash does better on average. \
         CPU SHA extensions: {} (`sha2` uses them unless built with \
         `RUSTFLAGS='--cfg sha2_backend=\"soft\"'`).\n",
        sha_extensions()
    );

    for &n_nodes in &NODES {
        let nodes = &all_nodes[..n_nodes];
        let n_nodes = thousands(n_nodes);
        // (conductors, candidate) → owners before any change, computed once.
        let mut base_owners = Vec::new();
        for &n in &CONDUCTORS {
            let base = hosts(n);
            for c in Candidate::ALL {
                let ring = c.build(&base);
                let owned: Vec<String> = owners(ring.as_ref(), nodes)
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                base_owners.push(((n, c.name()), owned));
            }
        }
        let before = |n: usize, c: Candidate| -> Vec<&str> {
            base_owners
                .iter()
                .find(|((m, name), _)| *m == n && *name == c.name())
                .map(|(_, o)| o.iter().map(String::as_str).collect())
                .unwrap_or_default()
        };

        header(
            &format!(
                "#### Balance, {n_nodes} nodes: max/mean, min/mean, stddev/mean of nodes per conductor"
            ),
            "conductors",
            &["binomial stddev/mean"],
        );
        for &n in &CONDUCTORS {
            let base = hosts(n);
            let mut row = vec![
                n.to_string(),
                format!("{:.3}", ((n - 1) as f64 / nodes.len() as f64).sqrt()),
            ];
            for c in Candidate::ALL {
                let b = balance(&base, &before(n, c));
                row.push(format!("{:.3}, {:.3}, {:.3}", b.max, b.min, b.sd));
            }
            println!("| {} |", row.join(" | "));
        }
        println!();

        header(
            &format!(
                "#### One conductor joins, {n_nodes} nodes: fraction of nodes moved, mean \
                 (min–max) of {TRIALS} joins, and nodes that moved other than to the joiner"
            ),
            "conductors",
            &["ideal 1/(n+1)"],
        );
        for &n in &CONDUCTORS {
            let base = hosts(n);
            let mut row = vec![
                format!("{n} → {}", n + 1),
                format!("{:.4}", 1.0 / (n + 1) as f64),
            ];
            for c in Candidate::ALL {
                row.push(joins(c, &base, &before(n, c), nodes).cell());
            }
            println!("| {} |", row.join(" | "));
        }
        println!();

        header(
            &format!(
                "#### One conductor leaves, {n_nodes} nodes: fraction of nodes moved, mean \
                 (min–max) of {TRIALS} leaves (every conductor when there are {TRIALS} or fewer, \
                 so the mean is exactly 1/n), and nodes that moved other than from the leaver"
            ),
            "conductors",
            &["ideal 1/n"],
        );
        for &n in &CONDUCTORS {
            let base = hosts(n);
            let mut row = vec![format!("{n} → {}", n - 1), format!("{:.4}", 1.0 / n as f64)];
            for c in Candidate::ALL {
                row.push(leaves(c, &base, &before(n, c), nodes).cell());
            }
            println!("| {} |", row.join(" | "));
        }
        println!();
    }

    let nodes = &all_nodes[..10_000];
    header(
        &format!("#### Lookup cost: ns per owner(node), 10,000 nodes, best of {RUNS} runs"),
        "conductors",
        &[],
    );
    let mut takeover = Vec::new();
    for &n in &CONDUCTORS {
        let base = hosts(n);
        let mut row = vec![n.to_string()];
        for c in Candidate::ALL {
            let ring = c.build(&base);
            let t = best(RUNS, || {
                for node in nodes {
                    black_box(ring.owner(black_box(node)));
                }
            });
            row.push(format!("{:.0}", t.as_nanos() as f64 / nodes.len() as f64));
            if n == 50 {
                let build = best(RUNS, || {
                    black_box(c.build(black_box(&base)));
                });
                takeover.push((c.name(), t, build));
            }
        }
        println!("| {} |", row.join(" | "));
    }
    println!();
    println!("#### 50 conductors, 10,000 nodes: the owners of every node, and building the ring\n");
    println!("| algorithm | owners of 10,000 nodes | build the ring |");
    println!("|---|---:|---:|");
    for (name, t, build) in &takeover {
        println!(
            "| {name} | {:.1} ms | {:.1} µs |",
            t.as_secs_f64() * 1e3,
            build.as_secs_f64() * 1e6
        );
    }
    let ring = Ring::new(hosts(50));
    let t = best(RUNS, || {
        for node in nodes {
            black_box(ring.owners(black_box(node), 2));
        }
    });
    println!(
        "\n`Ring::owners(node, 2)` (owner and successor), 50 conductors: {:.0} ns per node.",
        t.as_nanos() as f64 / nodes.len() as f64
    );
}
