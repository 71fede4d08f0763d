//! The hash ring: which conductor owns a node, when several conductors share one database.
//!
//! The ring is rendezvous (highest random weight) hashing. For a node, every host gets a
//! score; the host with the highest score owns the node, and the hosts in descending order
//! of score are the node's successors ([`Ring::owners`]). A host that joins takes exactly the
//! nodes for which it now scores highest, from whichever host had them; a host that leaves
//! gives each of its nodes to that node's next host. No other node moves. Measured against
//! Ironic's ring (tooz, md5, 2^5 partitions per host) in `docs/architecture.md`, "The hash
//! ring"; reproduce with `cargo run --release --example ring_balance`.
//!
//! # The bytes that are hashed
//!
//! ```text
//! key(host)         = SHA-256(host as UTF-8, exactly as given: no trimming, no case folding,
//!                             no Unicode normalisation)
//! digest(host, node) = SHA-256(key(host) || node)        48 bytes in, one SHA-256 block
//! score(host, node)  = the first 8 bytes of digest(host, node), as a big-endian u64
//! ```
//!
//! `node` is the uuid's 16 bytes in RFC 9562 order ([`uuid::Uuid::as_bytes`]): the 32 hex
//! digits of the canonical `xxxxxxxx-xxxx-…` form, in order, as bytes (Python's
//! `uuid.UUID(s).bytes`). The owner is the host with the highest score; on equal scores the
//! host whose name sorts first (by bytes) wins. Hashing the host first makes the input a fixed
//! 48 bytes whatever the host's name, so the concatenation is unambiguous and every score
//! costs one SHA-256 compression.
//!
//! # Stability
//!
//! The owner of a node is a function of the set of host names and the node's uuid only: not
//! of the order the hosts were given, duplicates, the process, the platform or the version of
//! ironboot or of Rust (no `DefaultHasher`, no `HashMap` order). During a rolling upgrade,
//! conductors of two versions must agree on every owner, or a node would have two owners or
//! none; so the function above never changes. Golden tests pin exact scores and owners,
//! checked against an independent implementation (Python's `hashlib`).
//!
//! # What the ring does not do
//!
//! No I/O, no clock, no async. It does not know which conductors are alive: membership
//! (registration, heartbeats, expiry) lives in the store and the conductor, which build a
//! new `Ring` from the live hosts' names. It has no weights.

use std::cmp::Reverse;
use std::fmt;

use sha2::{Digest, Sha256};
use uuid::Uuid;

/// A set of hosts (conductors, by `host` name) and the rule that maps a node to its owner.
///
/// Two rings with the same set of names are equal and give the same owners, whatever the
/// order or repetition the names were given in.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ring {
    /// Sorted by bytes, without duplicates.
    hosts: Vec<String>,
    /// `key(host)` for each host, in the same order.
    keys: Vec<[u8; 32]>,
}

impl Ring {
    /// A ring of these hosts. Names are kept exactly as given (an empty name is a host like
    /// any other); duplicates count once.
    pub fn new<I, S>(hosts: I) -> Ring
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut hosts: Vec<String> = hosts.into_iter().map(|h| h.as_ref().to_owned()).collect();
        hosts.sort_unstable();
        hosts.dedup();
        let keys = hosts.iter().map(|h| host_key(h)).collect();
        Ring { hosts, keys }
    }

    /// The host that owns `node`; `None` only when the ring is empty.
    pub fn owner(&self, node: &Uuid) -> Option<&str> {
        let mut best: Option<(u64, usize)> = None;
        for (i, key) in self.keys.iter().enumerate() {
            let s = score(key, node);
            // Strictly greater: on a tie the earlier host, whose name sorts first, stays.
            if best.is_none_or(|(b, _)| s > b) {
                best = Some((s, i));
            }
        }
        best.map(|(_, i)| self.hosts[i].as_str())
    }

    /// The first `k` hosts in `node`'s order of preference, distinct: the owner, then the
    /// host that would own `node` if the owner left, and so on. Fewer than `k` when the ring
    /// has fewer hosts; empty when `k` is 0 or the ring is empty. `owners(node, 1)` is
    /// `owner(node)`.
    pub fn owners(&self, node: &Uuid, k: usize) -> Vec<&str> {
        if k == 0 {
            return Vec::new();
        }
        let mut ranked: Vec<(Reverse<u64>, usize)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, key)| (Reverse(score(key, node)), i))
            .collect();
        // Only the first k need sorting: move them to the front first.
        if k < ranked.len() {
            ranked.select_nth_unstable(k - 1);
            ranked.truncate(k);
        }
        ranked.sort_unstable();
        ranked
            .into_iter()
            .take(k)
            .map(|(_, i)| self.hosts[i].as_str())
            .collect()
    }

    /// The hosts, sorted by bytes, each once.
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether `host` (exactly this name) is in the ring.
    pub fn contains(&self, host: &str) -> bool {
        self.hosts
            .binary_search_by(|h| h.as_str().cmp(host))
            .is_ok()
    }

    /// The number of distinct hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("hosts", &self.hosts).finish()
    }
}

/// `key(host)`: SHA-256 of the name's UTF-8 bytes.
fn host_key(host: &str) -> [u8; 32] {
    Sha256::digest(host.as_bytes()).into()
}

/// `score(host, node)`: the first 8 bytes, big-endian, of SHA-256(`key(host)` || `node`).
fn score(key: &[u8; 32], node: &Uuid) -> u64 {
    let digest: [u8; 32] = Sha256::new()
        .chain_update(key)
        .chain_update(node.as_bytes())
        .finalize()
        .into();
    let [a, b, c, d, e, f, g, h, ..] = digest;
    u64::from_be_bytes([a, b, c, d, e, f, g, h])
}

#[cfg(test)]
mod tests;
