//! Who to ban after pieces fail their hash check.
//!
//! Owns: strike counts per peer. A peer that alone sent a piece that failed is banned at once; a peer
//! that took part in `BAN_AFTER_STRIKES` failed pieces is banned too (with several contributors, one
//! failure cannot tell the liar from the honest).
//! Must not: disconnect anyone; it returns the peers to ban and the loop (or the simulation) acts.

use std::collections::HashMap;

use super::PeerNo;

/// Failed pieces a peer may take part in before it is banned.
pub const BAN_AFTER_STRIKES: u32 = 3;

#[derive(Default)]
pub struct BanList {
    strikes: HashMap<PeerNo, u32>,
    banned: Vec<PeerNo>,
}

impl BanList {
    /// A piece sent by `contributors` failed verification. Returns the peers newly banned.
    pub fn on_piece_failed(&mut self, contributors: &[PeerNo]) -> Vec<PeerNo> {
        let alone = contributors.len() == 1;
        let mut newly = Vec::new();
        for &no in contributors {
            let strikes = self.strikes.entry(no).or_insert(0);
            *strikes += 1;
            if (alone || *strikes >= BAN_AFTER_STRIKES) && !self.banned.contains(&no) {
                self.banned.push(no);
                newly.push(no);
            }
        }
        newly
    }

    pub fn is_banned(&self, no: PeerNo) -> bool {
        self.banned.contains(&no)
    }

    pub fn strikes(&self, no: PeerNo) -> u32 {
        self.strikes.get(&no).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sole_sender_of_a_failed_piece_is_banned_at_once() {
        let mut bans = BanList::default();
        assert_eq!(bans.on_piece_failed(&[PeerNo(7)]), vec![PeerNo(7)]);
        assert!(bans.is_banned(PeerNo(7)));
        assert_eq!(bans.on_piece_failed(&[PeerNo(7)]), vec![], "banned once");
    }

    #[test]
    fn shared_failures_ban_after_the_threshold_only_the_repeat_offender() {
        let mut bans = BanList::default();
        assert!(bans.on_piece_failed(&[PeerNo(1), PeerNo(2)]).is_empty());
        assert!(bans.on_piece_failed(&[PeerNo(1), PeerNo(3)]).is_empty());
        assert_eq!(bans.on_piece_failed(&[PeerNo(1), PeerNo(4)]), vec![PeerNo(1)]);
        assert_eq!(bans.strikes(PeerNo(2)), 1);
        assert!(!bans.is_banned(PeerNo(2)) && !bans.is_banned(PeerNo(3)));
    }
}
