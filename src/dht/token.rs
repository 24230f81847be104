//! Announce tokens (BEP 5): what we hand a `get_peers` asker and require back in its `announce_peer`.
//!
//! token = SHA-1(secret ‖ asker's IP)[..8]. The secret is drawn from `Entropy` and rotated every
//! [`ROTATE_EVERY`]; a token made with the previous secret is still accepted, so a token lives 5 to 10
//! minutes. Owns: the two secrets and when the next rotation is due. Must not: read the clock or the OS
//! (time and entropy are handed in), or decide who gets a token.
//!
//! BEP 5: <https://www.bittorrent.org/beps/bep_0005.html> ("announce_peer", tokens).

use std::net::IpAddr;
use std::time::Duration;

use sha1::{Digest, Sha1};

use crate::rng::Entropy;
use crate::time::{secs, Timestamp};

pub const ROTATE_EVERY: Duration = secs(5 * 60);
pub const TOKEN_LEN: usize = 8;

pub struct TokenSecrets {
    current: [u8; 20],
    previous: [u8; 20],
    next_rotation: Timestamp,
}

impl TokenSecrets {
    pub fn new(now: Timestamp, entropy: &mut Entropy) -> Self {
        let mut current = [0u8; 20];
        let mut previous = [0u8; 20];
        entropy.fill(&mut current);
        entropy.fill(&mut previous);
        TokenSecrets { current, previous, next_rotation: now + ROTATE_EVERY }
    }

    /// When [`TokenSecrets::handle_timeout`] next has work.
    pub fn poll_timeout(&self) -> Timestamp {
        self.next_rotation
    }

    /// Rotates once if due (a long sleep rotates once: both old secrets are then stale, which is what a
    /// long sleep deserves, so rotate twice in that case).
    pub fn handle_timeout(&mut self, now: Timestamp, entropy: &mut Entropy) {
        if now < self.next_rotation {
            return;
        }
        let twice = now >= self.next_rotation + ROTATE_EVERY;
        for _ in 0..if twice { 2 } else { 1 } {
            self.previous = self.current;
            entropy.fill(&mut self.current);
        }
        self.next_rotation = now + ROTATE_EVERY;
    }

    pub fn make(&self, ip: IpAddr) -> [u8; TOKEN_LEN] {
        token_for(&self.current, ip)
    }

    /// Whether `token` was made for `ip` with the current or the previous secret.
    pub fn check(&self, ip: IpAddr, token: &[u8]) -> bool {
        token.len() == TOKEN_LEN
            && (same(&token_for(&self.current, ip), token) | same(&token_for(&self.previous, ip), token))
    }
}

fn token_for(secret: &[u8; 20], ip: IpAddr) -> [u8; TOKEN_LEN] {
    let mut h = Sha1::new().chain_update(secret);
    match ip {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    let d = h.finalize();
    let mut t = [0u8; TOKEN_LEN];
    t.copy_from_slice(&d[..TOKEN_LEN]);
    t
}

/// Comparison whose time does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_survive_one_rotation_not_two_and_are_per_ip() {
        let mut e = Entropy::seeded(9);
        let t0 = Timestamp::ZERO;
        let mut s = TokenSecrets::new(t0, &mut e);
        let a: IpAddr = "1.2.3.4".parse().unwrap();
        let b: IpAddr = "1.2.3.5".parse().unwrap();
        let tok = s.make(a);
        assert!(s.check(a, &tok));
        assert!(!s.check(b, &tok));
        assert!(!s.check(a, &tok[..7]));
        assert_eq!(s.poll_timeout(), t0 + ROTATE_EVERY);
        s.handle_timeout(t0 + secs(299), &mut e);
        assert_eq!(s.make(a), tok, "nothing is due before five minutes");
        s.handle_timeout(t0 + secs(300), &mut e);
        assert_ne!(s.make(a), tok);
        assert!(s.check(a, &tok), "the previous secret is still accepted");
        s.handle_timeout(t0 + secs(600), &mut e);
        assert!(!s.check(a, &tok), "two rotations later the token is stale");
        let tok2 = s.make(a);
        s.handle_timeout(t0 + secs(3600), &mut e);
        assert!(!s.check(a, &tok2), "a long sleep invalidates everything");
        let six: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(s.check(six, &s.make(six)));
    }

    #[test]
    fn secrets_differ_between_sources() {
        let a = TokenSecrets::new(Timestamp::ZERO, &mut Entropy::seeded(1));
        let b = TokenSecrets::new(Timestamp::ZERO, &mut Entropy::seeded(2));
        let ip: IpAddr = "8.8.8.8".parse().unwrap();
        assert!(!b.check(ip, &a.make(ip)));
    }
}
