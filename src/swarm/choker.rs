//! Choking: who we upload to.
//!
//! Owns: the choke-round policy — every 10 s unchoke the best `slots` interested peers by rate (the rate
//! they give us while we download, the rate they take while we seed), never counting a snubbed peer
//! (interesting to us, silent for 60 s) as a regular slot; one optimistic unchoke rotated every 30 s,
//! new peers three times as likely to get it; and unchoking a newly interested peer at once while a slot
//! is free.
//! Must not: send anything or read the clock. Stats and `now` in, decisions out.
//!
//! <https://www.bittorrent.org/beps/bep_0003.html> ("Choking and optimistic unchoking").

use std::time::Duration;

use crate::rng::Rng;
use crate::swarm::PeerNo;
use crate::time::{secs, Timestamp};

/// Choke rounds (BEP 3 guidance; Transmission's `MinChokePeriodSec` is also 10 s, "avoid fibrillation").
pub const CHOKE_ROUND: Duration = secs(10);
/// The optimistic unchoke moves every third round.
pub const OPTIMISTIC_EVERY_ROUNDS: u32 = 3;
/// A peer we want data from that sent none for this long is snubbed.
pub const SNUB_AFTER: Duration = secs(60);
/// Peers connected for less than this count as new for the optimistic draw.
pub const NEW_PEER_AGE: Duration = secs(60);

/// What the choker needs to know about one connected peer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PeerStat<K> {
    pub key: K,
    pub no: PeerNo,
    /// The peer is interested in what we have.
    pub interested: bool,
    pub am_choking: bool,
    /// Bytes/s the peer sends us, and we send it.
    pub download_rate: f64,
    pub upload_rate: f64,
    /// We are interested in it and it sent us no block for `SNUB_AFTER`.
    pub snubbed: bool,
    pub connected_at: Timestamp,
}

/// Choke or unchoke this peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChokeChange<K> {
    pub key: K,
    pub choke: bool,
}

pub struct Choker {
    slots: usize,
    round: u32,
    optimistic: Option<PeerNo>,
}

impl Choker {
    /// `slots`: regular upload slots (`--max-upload-slots`); one optimistic slot comes on top.
    pub fn new(slots: usize) -> Self {
        Choker { slots, round: 0, optimistic: None }
    }

    pub fn optimistic(&self) -> Option<PeerNo> {
        self.optimistic
    }

    /// One choke round. Returns the changes to make (peers whose state stays are not listed).
    pub fn run_round<K: Copy>(
        &mut self,
        peers: &[PeerStat<K>],
        seeding: bool,
        now: Timestamp,
        rng: &mut Rng,
    ) -> Vec<ChokeChange<K>> {
        let rotate = self.round % OPTIMISTIC_EVERY_ROUNDS == 0;
        self.round += 1;
        let rate = |p: &PeerStat<K>| {
            if seeding {
                p.upload_rate
            } else {
                p.download_rate
            }
        };
        // 1. Regular slots: the fastest interested peers that are not snubbed.
        let mut ranked: Vec<usize> =
            (0..peers.len()).filter(|&i| peers[i].interested && (seeding || !peers[i].snubbed)).collect();
        ranked.sort_by(|&a, &b| rate(&peers[b]).total_cmp(&rate(&peers[a])).then(peers[a].no.cmp(&peers[b].no)));
        let mut unchoke = vec![false; peers.len()];
        for &i in ranked.iter().take(self.slots) {
            unchoke[i] = true;
        }
        // 2. The optimistic slot: kept for three rounds, then redrawn among interested peers not already
        //    unchoked, new peers weighted three to one.
        let kept = self
            .optimistic
            .and_then(|no| peers.iter().position(|p| p.no == no))
            .filter(|&i| peers[i].interested && !unchoke[i]);
        let optimistic = match kept {
            Some(i) if !rotate => Some(i),
            _ => {
                let candidates: Vec<usize> = (0..peers.len()).filter(|&i| peers[i].interested && !unchoke[i]).collect();
                let weight = |i: usize| {
                    if now - peers[i].connected_at < NEW_PEER_AGE {
                        3
                    } else {
                        1
                    }
                };
                let total: u64 = candidates.iter().map(|&i| weight(i)).sum();
                if total == 0 {
                    None
                } else {
                    let mut pick = rng.below(total);
                    candidates.into_iter().find(|&i| {
                        let w = weight(i);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                }
            }
        };
        self.optimistic = optimistic.map(|i| peers[i].no);
        if let Some(i) = optimistic {
            unchoke[i] = true;
        }
        peers
            .iter()
            .zip(unchoke)
            .filter(|(p, u)| p.am_choking == *u)
            .map(|(p, u)| ChokeChange { key: p.key, choke: !u })
            .collect()
    }

    /// Between rounds: whether a peer that just became interested may be unchoked at once.
    pub fn has_free_slot(&self, unchoked_now: usize) -> bool {
        unchoked_now < self.slots + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(no: u64, interested: bool, down: f64, up: f64) -> PeerStat<u64> {
        PeerStat {
            key: no,
            no: PeerNo(no),
            interested,
            am_choking: true,
            download_rate: down,
            upload_rate: up,
            snubbed: false,
            connected_at: Timestamp::ZERO,
        }
    }

    fn unchoked(changes: &[ChokeChange<u64>]) -> Vec<u64> {
        let mut v: Vec<u64> = changes.iter().filter(|c| !c.choke).map(|c| c.key).collect();
        v.sort_unstable();
        v
    }

    #[test]
    fn choker_unchokes_fastest_uploaders_while_downloading_plus_one_optimistic() {
        let mut rng = Rng::seeded(1);
        let mut choker = Choker::new(2);
        let peers: Vec<_> = (1..=6).map(|n| peer(n, true, n as f64 * 100.0, 0.0)).collect();
        let now = Timestamp::from_secs(600);
        let changes = choker.run_round(&peers, false, now, &mut rng);
        let up = unchoked(&changes);
        assert_eq!(up.len(), 3, "two regular slots and one optimistic: {up:?}");
        assert!(up.contains(&6) && up.contains(&5), "the two fastest: {up:?}");
        let opt = choker.optimistic().unwrap().0;
        assert!(opt <= 4, "the optimistic slot goes to another peer");
    }

    #[test]
    fn choker_ranks_by_upload_rate_when_seeding_and_ignores_uninterested() {
        let mut rng = Rng::seeded(1);
        let mut choker = Choker::new(1);
        let peers = vec![peer(1, true, 0.0, 10.0), peer(2, true, 0.0, 50.0), peer(3, false, 0.0, 99.0)];
        let up = unchoked(&choker.run_round(&peers, true, Timestamp::from_secs(100), &mut rng));
        assert!(up.contains(&2));
        assert!(!up.contains(&3), "not interested: never unchoked");
    }

    #[test]
    fn choker_does_not_count_snubbed_peers_as_regular() {
        let mut rng = Rng::seeded(1);
        let mut choker = Choker::new(1);
        let mut fast_but_snubbed = peer(1, true, 1000.0, 0.0);
        fast_but_snubbed.snubbed = true;
        let peers = vec![fast_but_snubbed, peer(2, true, 10.0, 0.0)];
        choker.run_round(&peers, false, Timestamp::from_secs(100), &mut rng);
        // Peer 2 holds the regular slot; peer 1 can only be the optimistic one.
        assert_eq!(choker.optimistic(), Some(PeerNo(1)));
    }

    #[test]
    fn choker_rotates_optimistic_slot_every_30s() {
        let mut rng = Rng::seeded(9);
        let mut choker = Choker::new(0);
        let mut peers: Vec<_> = (1..=8).map(|n| peer(n, true, 0.0, 0.0)).collect();
        let mut seen = vec![];
        for round in 0..12u64 {
            let changes = choker.run_round(&peers, false, Timestamp::from_secs(1000 + round * 10), &mut rng);
            for c in changes {
                peers.iter_mut().find(|p| p.key == c.key).unwrap().am_choking = c.choke;
            }
            let opt = choker.optimistic().unwrap();
            if round % 3 != 0 {
                assert_eq!(Some(&opt), seen.last(), "kept between rotations (round {round})");
            }
            seen.push(opt);
            assert_eq!(peers.iter().filter(|p| !p.am_choking).count(), 1);
        }
        seen.dedup();
        assert!(seen.len() >= 3, "the slot moved: {seen:?}");
    }

    #[test]
    fn choker_prefers_new_peers_for_the_optimistic_slot() {
        let mut hits_new = 0;
        for seed in 0..200 {
            let mut rng = Rng::seeded(seed);
            let mut choker = Choker::new(0);
            let mut new = peer(1, true, 0.0, 0.0);
            new.connected_at = Timestamp::from_secs(990);
            let peers = vec![new, peer(2, true, 0.0, 0.0), peer(3, true, 0.0, 0.0)];
            choker.run_round(&peers, false, Timestamp::from_secs(1000), &mut rng);
            if choker.optimistic() == Some(PeerNo(1)) {
                hits_new += 1;
            }
        }
        // Weight 3 of 5: about 120 of 200.
        assert!((95..=145).contains(&hits_new), "new peer drawn {hits_new} of 200 times");
    }
}
