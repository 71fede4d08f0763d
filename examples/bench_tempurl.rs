//! Signing-rate benchmark: how many swiftclient-form TempURLs per second ironboot produces.
//! Each URL is what `generate_temp_url(path, 1200, key, 'GET')` returns, and the clock is
//! read for every URL, as swiftclient does. Run through `bench/tempurl.sh`, which times
//! python-swiftclient in the same run.
//!
//! Usage: bench_tempurl [THREADS] [SECONDS]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ironboot::tempurl::{Digest, Method, Request, Signer};

const PATH: &str =
    "/v1/AUTH_a422b291f32f4674b7d7c9e8958f5d30/glance/757274c4-2856-4bd2-bb20-9a4a231e187b";

fn worker(signer: Signer, run_for: Duration) -> (u64, usize) {
    let method = Method::get();
    let start = Instant::now();
    let mut count = 0u64;
    let mut bytes = 0usize;
    while start.elapsed() < run_for {
        for _ in 0..1000 {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs() as i64;
            let url = signer
                .sign(&Request::new(&method, PATH, now + 1200))
                .unwrap()
                .swiftclient_form();
            bytes += url.len();
            count += 1;
        }
    }
    (count, bytes)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args
        .next()
        .map(|a| a.parse().expect("THREADS"))
        .unwrap_or(1);
    let seconds: f64 = args
        .next()
        .map(|a| a.parse().expect("SECONDS"))
        .unwrap_or(3.0);
    let signer = Signer::new(b"correcthorsebatterystaple", Digest::Sha256);
    let run_for = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let s = signer.clone();
            std::thread::spawn(move || worker(s, run_for))
        })
        .collect();
    let (count, bytes) = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let wall = start.elapsed().as_secs_f64();
    assert!(bytes > 0);
    println!("{:.0}", count as f64 / wall);
}
