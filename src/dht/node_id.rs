//! 160-bit DHT node ids, XOR distance, bucket indices, and BEP 42's binding of an id to an address.
//!
//! Owns: the `NodeId` type, the crc32c (Castagnoli) function BEP 42 needs, deriving our id from an
//! external address and checking a node's id against the address it talks from.
//! Must not: decide what an unmatched id means (routing and lookups decide), or draw randomness itself
//! (the caller hands in `Entropy`).
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html>; BEP 42:
//! <https://www.bittorrent.org/beps/bep_0042.html>.

use std::fmt;
use std::net::IpAddr;

use crate::rng::Entropy;

/// A node id or an info-hash: both live in the same 160-bit space.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…")
    }
}

impl NodeId {
    /// A uniformly random id (before BEP 42 can fix one, or as a lookup target).
    pub fn random(entropy: &mut Entropy) -> Self {
        let mut id = [0u8; 20];
        entropy.fill(&mut id);
        NodeId(id)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(NodeId(bytes.try_into().ok()?))
    }

    /// XOR distance; compare results as big-endian byte strings.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, slot) in d.iter_mut().enumerate() {
            *slot = self.0[i] ^ other.0[i];
        }
        d
    }

    /// The number of leading bits `self` and `other` share: 0..=159, or 160 when equal. A routing table
    /// puts `other` in bucket `min(shared_prefix, last)`.
    pub fn shared_prefix(&self, other: &NodeId) -> usize {
        for i in 0..20 {
            let x = self.0[i] ^ other.0[i];
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }

    /// A random id that shares exactly `prefix` leading bits with `self` (`prefix` < 160): a target inside
    /// the bucket that holds ids at that depth.
    pub fn random_at_depth(&self, prefix: usize, fill: &mut dyn FnMut(&mut [u8])) -> NodeId {
        debug_assert!(prefix < 160);
        let mut out = [0u8; 20];
        fill(&mut out);
        for bit in 0..=prefix {
            let (byte, mask) = (bit / 8, 0x80u8 >> (bit % 8));
            let own = self.0[byte] & mask;
            let want = if bit == prefix { own ^ mask } else { own };
            out[byte] = (out[byte] & !mask) | want;
        }
        NodeId(out)
    }
}

/// crc32c (Castagnoli, reflected polynomial 0x82F63B78), table-driven, as BEP 42 specifies.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = CRC32C_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC32C_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 { 0x82F6_3B78 ^ (c >> 1) } else { c >> 1 };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

/// The crc32c BEP 42 binds to an address and a 3-bit `r`.
fn bep42_crc(ip: IpAddr, r: u8) -> u32 {
    let r = r & 0x7;
    match ip {
        IpAddr::V4(v4) => {
            let mut b = v4.octets();
            for (x, m) in b.iter_mut().zip([0x03, 0x0f, 0x3f, 0xff]) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
        IpAddr::V6(v6) => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&v6.octets()[..8]);
            for (x, m) in b.iter_mut().zip([0x01, 0x03, 0x07, 0x0f, 0x1f, 0x3f, 0x7f, 0xff]) {
                *x &= m;
            }
            b[0] |= r << 5;
            crc32c(&b)
        }
    }
}

/// Our id for the external address `ip` (BEP 42): the first 21 bits from the crc, the last byte is the
/// random `r` the crc used, the rest random.
pub fn secure_id(ip: IpAddr, entropy: &mut Entropy) -> NodeId {
    let mut id = NodeId::random(entropy);
    let rand = id.0[19];
    let crc = bep42_crc(ip, rand);
    id.0[0] = (crc >> 24) as u8;
    id.0[1] = (crc >> 16) as u8;
    id.0[2] = ((crc >> 8) as u8 & 0xf8) | (id.0[2] & 0x07);
    id
}

/// Addresses BEP 42 does not bind ids to: loopback, private and link-local ranges (and their IPv6 kin:
/// loopback, unique-local fc00::/7, link-local fe80::/10).
pub fn is_exempt(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            o[0] == 127
                || o[0] == 10
                || (o[0] == 172 && o[1] & 0xf0 == 16)
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 169 && o[1] == 254)
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            v6.is_loopback() || s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfe80
        }
    }
}

/// Whether `id` is the one BEP 42 allows for `ip` (its first 21 bits match the crc of the address and the
/// id's last byte). Exempt addresses always pass.
pub fn id_matches_ip(id: &NodeId, ip: IpAddr) -> bool {
    if is_exempt(ip) {
        return true;
    }
    let crc = bep42_crc(ip, id.0[19]);
    id.0[0] == (crc >> 24) as u8 && id.0[1] == (crc >> 16) as u8 && id.0[2] & 0xf8 == (crc >> 8) as u8 & 0xf8
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_vector() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// BEP 42's table: IP, rand, and the example id whose first 21 bits and last byte are fixed.
    const BEP42_EXAMPLES: &[(&str, u8, &str)] = &[
        ("124.31.75.21", 1, "5fbfbff10c5d6a4ec8a88e4c6ab4c28b95eee401"),
        ("21.75.31.124", 86, "5a3ce9c14e7a08645677bbd1cfe7d8f956d53256"),
        ("65.23.51.170", 22, "a5d43220bc8f112a3d426c84764f8c2a1150e616"),
        ("84.124.73.14", 65, "1b0321dd1bb1fe518101ceef99462b947a01ff41"),
        ("43.213.53.83", 90, "e56f6cbf5b7c4be0237986d5243b87aa6d51305a"),
    ];

    fn hex_id(s: &str) -> NodeId {
        let mut id = [0u8; 20];
        for (i, b) in id.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[i * 2..i * 2 + 2], 16).unwrap();
        }
        NodeId(id)
    }

    #[test]
    fn bep42_worked_examples() {
        for &(ip, rand, example) in BEP42_EXAMPLES {
            let ip: IpAddr = ip.parse().unwrap();
            let example = hex_id(example);
            assert_eq!(example.0[19], rand);
            let crc = bep42_crc(ip, rand);
            assert_eq!([(crc >> 24) as u8, (crc >> 16) as u8], [example.0[0], example.0[1]], "{ip}");
            assert_eq!((crc >> 8) as u8 & 0xf8, example.0[2] & 0xf8, "{ip}");
            assert!(id_matches_ip(&example, ip), "{ip}");
            // One bit off in the prefix, or a different last byte, fails the check.
            let mut bad = example;
            bad.0[2] ^= 0x08;
            assert!(!id_matches_ip(&bad, ip), "{ip}");
            let mut bad = example;
            bad.0[19] ^= 0x01;
            assert!(!id_matches_ip(&bad, ip), "{ip}");
        }
    }

    #[test]
    fn secure_ids_match_their_address_and_exempt_ranges_pass() {
        let mut e = Entropy::seeded(42);
        for ip in ["124.31.75.21", "8.8.4.4", "2001:db8::1", "2a01:4f8::7"] {
            let ip: IpAddr = ip.parse().unwrap();
            for _ in 0..20 {
                let id = secure_id(ip, &mut e);
                assert!(id_matches_ip(&id, ip), "{ip}");
            }
            let other: IpAddr = if ip.is_ipv4() { "1.2.3.4".parse().unwrap() } else { "2a00::1".parse().unwrap() };
            let misses = (0..20).filter(|_| !id_matches_ip(&secure_id(ip, &mut e), other)).count();
            assert!(misses >= 19, "ids for {ip} matched {other}");
        }
        for ip in ["127.0.0.1", "10.1.2.3", "172.16.0.1", "172.31.255.1", "192.168.1.1", "169.254.9.9", "::1"] {
            assert!(is_exempt(ip.parse().unwrap()) && id_matches_ip(&NodeId([0; 20]), ip.parse().unwrap()));
        }
        for ip in ["172.32.0.1", "11.0.0.1", "192.169.0.1", "2001:db8::1"] {
            assert!(!is_exempt(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn distance_prefix_and_depth_targets() {
        let a = NodeId([0; 20]);
        let mut b = a;
        b.0[0] = 0x10;
        assert_eq!(a.shared_prefix(&b), 3);
        assert_eq!(a.shared_prefix(&a), 160);
        assert_eq!(a.distance(&b)[0], 0x10);
        let mut rng = crate::rng::Rng::seeded(1);
        let mut fill = |out: &mut [u8]| rng.fill(out);
        for depth in [0, 1, 7, 8, 100, 159] {
            let t = a.random_at_depth(depth, &mut fill);
            assert_eq!(a.shared_prefix(&t), depth);
        }
    }
}
