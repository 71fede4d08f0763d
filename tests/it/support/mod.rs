//! Shared helpers for the integration tests: the real services started by `scripts/test.sh`,
//! found through environment variables, and a small Swift client for setting them up.
//!
//! A test that needs a service fails (it does not skip) when the service is missing: run the
//! suite with `scripts/test.sh`, which starts everything.

#![allow(dead_code)]

pub mod glance;
pub mod glance_env;
pub mod origin;
pub mod proxy;
pub mod server;
pub mod stream_origin;
pub mod swift;

use std::path::PathBuf;

/// An environment variable that `scripts/test.sh` sets.
pub fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: this test needs the real services that scripts/test.sh starts \
             (run scripts/test.sh, or start scripts/swift-aio.sh / scripts/postgres-aio.sh and \
             source their `env` output)"
        )
    })
}

/// The Python interpreter that has python-swiftclient 4.11.
pub fn python() -> PathBuf {
    PathBuf::from(required_env("IRONBOOT_TEST_PYTHON"))
}

/// The `ironboot` binary built for these tests.
pub fn ironboot_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ironboot"))
}

/// The current Unix time.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Waits until `check` returns true, polling every 10 ms; fails after 10 s with `what`.
pub async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// A unique, lowercase name for things a test creates.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// xorshift64*: a small seeded generator, so a failing random test can be replayed with
/// `IRONBOOT_TEST_SEED`.
pub struct Rng(u64);

impl Rng {
    pub fn from_env() -> (Rng, u64) {
        let seed = std::env::var("IRONBOOT_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
                    | 1
            });
        (Rng(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}
