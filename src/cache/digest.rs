//! Checksums: what the caller expects of an image, and the single-pass hasher a download
//! feeds.

use std::fmt;

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha512};

use super::CacheError;

/// A digest algorithm the cache verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Algo {
    /// Glance's legacy `checksum`, used only where it is all there is.
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256; the digest recorded when no checksum is expected.
    Sha256,
    /// Glance's default `os_hash_algo`.
    Sha512,
}

impl Algo {
    /// Parses a name as Glance's `os_hash_algo` and Ironic's `image_checksum` spell it
    /// (`sha512`, `sha256`, `sha1`, `md5`; case-insensitive).
    pub fn parse(name: &str) -> Option<Algo> {
        match name.to_ascii_lowercase().as_str() {
            "md5" => Some(Algo::Md5),
            "sha1" => Some(Algo::Sha1),
            "sha256" => Some(Algo::Sha256),
            "sha512" => Some(Algo::Sha512),
            _ => None,
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Algo::Md5 => "md5",
            Algo::Sha1 => "sha1",
            Algo::Sha256 => "sha256",
            Algo::Sha512 => "sha512",
        }
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algo::Md5 => 32,
            Algo::Sha1 => 40,
            Algo::Sha256 => 64,
            Algo::Sha512 => 128,
        }
    }
}

impl fmt::Display for Algo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A digest: an algorithm and the lowercase hex value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Digest {
    /// The algorithm.
    pub algo: Algo,
    /// The value, lowercase hex.
    pub hex: String,
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex)
    }
}

/// The digest an image must have. Built only through [`Expected::new`] or
/// [`Expected::from_glance`], so the hex is lowercase and of the algorithm's length.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Expected(Digest);

impl Expected {
    /// `hex` must be the algorithm's digest in hex (either case).
    pub fn new(algo: Algo, hex: &str) -> Result<Expected, CacheError> {
        let hex = hex.trim();
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(CacheError::InvalidChecksum(format!(
                "the expected {algo} checksum must be {} hex digits, not {:?}",
                algo.hex_len(),
                hex.chars().take(140).collect::<String>()
            )));
        }
        Ok(Expected(Digest {
            algo,
            hex: hex.to_ascii_lowercase(),
        }))
    }

    /// The check Glance's image properties allow: `os_hash_algo`/`os_hash_value` when the
    /// algorithm is one the cache knows, else the md5 `checksum`. `Ok(None)` when Glance
    /// gave neither; an error when it gave only a hash of an unknown algorithm (verifying
    /// nothing would be a silent downgrade) or a malformed value.
    pub fn from_glance(
        os_hash_algo: Option<&str>,
        os_hash_value: Option<&str>,
        checksum: Option<&str>,
    ) -> Result<Option<Expected>, CacheError> {
        let checksum = checksum.filter(|c| !c.is_empty());
        if let (Some(name), Some(value)) = (os_hash_algo, os_hash_value.filter(|v| !v.is_empty())) {
            match Algo::parse(name) {
                Some(algo) => return Expected::new(algo, value).map(Some),
                None if checksum.is_none() => {
                    return Err(CacheError::InvalidChecksum(format!(
                        "Glance's os_hash_algo {:?} is not one of md5, sha1, sha256, sha512 and \
                         the image has no md5 checksum",
                        name.chars().take(40).collect::<String>()
                    )));
                }
                None => {}
            }
        }
        checksum.map(|c| Expected::new(Algo::Md5, c)).transpose()
    }

    /// The algorithm.
    pub fn algo(&self) -> Algo {
        self.0.algo
    }

    /// The lowercase hex value.
    pub fn hex(&self) -> &str {
        &self.0.hex
    }

    /// As a digest.
    pub fn digest(&self) -> &Digest {
        &self.0
    }
}

/// A running hash of one algorithm, fed chunk by chunk while the bytes are written.
pub(crate) enum Hasher {
    Md5(Md5),
    Sha1(Sha1),
    Sha256(Sha256),
    Sha512(Sha512),
}

impl Hasher {
    pub(crate) fn new(algo: Algo) -> Hasher {
        match algo {
            Algo::Md5 => Hasher::Md5(Md5::new()),
            Algo::Sha1 => Hasher::Sha1(Sha1::new()),
            Algo::Sha256 => Hasher::Sha256(Sha256::new()),
            Algo::Sha512 => Hasher::Sha512(Sha512::new()),
        }
    }

    pub(crate) fn update(&mut self, bytes: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(bytes),
            Hasher::Sha1(h) => h.update(bytes),
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
    }

    pub(crate) fn finish(self) -> Digest {
        let (algo, bytes) = match self {
            Hasher::Md5(h) => (Algo::Md5, h.finalize().to_vec()),
            Hasher::Sha1(h) => (Algo::Sha1, h.finalize().to_vec()),
            Hasher::Sha256(h) => (Algo::Sha256, h.finalize().to_vec()),
            Hasher::Sha512(h) => (Algo::Sha512, h.finalize().to_vec()),
        };
        let mut hex = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        Digest { algo, hex }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(algo: Algo, bytes: &[u8]) -> String {
        let mut h = Hasher::new(algo);
        // Two updates: the same as one.
        let (a, b) = bytes.split_at(bytes.len() / 2);
        h.update(a);
        h.update(b);
        h.finish().hex
    }

    /// Digests of "abc" from the FIPS 180 / RFC 1321 test vectors.
    #[test]
    fn hashers_match_test_vectors() {
        assert_eq!(hash(Algo::Md5, b"abc"), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hash(Algo::Sha1, b"abc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hash(Algo::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hash(Algo::Sha512, b"abc"),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
    }

    #[test]
    fn expected_digests_are_checked_and_lowercased() {
        let e = Expected::new(Algo::Md5, "900150983CD24FB0D6963F7D28E17F72").unwrap();
        assert_eq!(e.hex(), "900150983cd24fb0d6963f7d28e17f72");
        assert!(Expected::new(Algo::Sha256, "900150983cd24fb0d6963f7d28e17f72").is_err());
        assert!(Expected::new(Algo::Md5, "z00150983cd24fb0d6963f7d28e17f72").is_err());
    }

    #[test]
    fn glance_prefers_os_hash_and_falls_back_to_md5() {
        let md5 = "900150983cd24fb0d6963f7d28e17f72";
        let sha512 = hash(Algo::Sha512, b"abc");
        let e = Expected::from_glance(Some("sha512"), Some(&sha512), Some(md5))
            .unwrap()
            .unwrap();
        assert_eq!(e.algo(), Algo::Sha512);
        let e = Expected::from_glance(Some("blake2b"), Some("00"), Some(md5))
            .unwrap()
            .unwrap();
        assert_eq!(e.algo(), Algo::Md5);
        let e = Expected::from_glance(None, None, Some(md5))
            .unwrap()
            .unwrap();
        assert_eq!(e.algo(), Algo::Md5);
        assert_eq!(Expected::from_glance(None, None, None).unwrap(), None);
        assert!(matches!(
            Expected::from_glance(Some("blake2b"), Some("00"), None),
            Err(CacheError::InvalidChecksum(_))
        ));
    }
}
