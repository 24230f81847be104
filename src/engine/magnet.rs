//! A torrent that exists before its metadata (a magnet link): the `AwaitingMetadata` phase.
//!
//! Owns: the placeholder context and swarm its sessions run against (no pieces: sessions record what
//! peers have, for later), the BEP 9 fetch (`metadata::MetadataFetch`) driven by the peers' extended
//! handshakes and ut_metadata messages, and turning the verified info dictionary into a `Metainfo` (the
//! same bytes a `.torrent` would hold: `announce-list` from the magnet, `info` verbatim).
//! Must not: touch connections or the clock (the engine passes sessions and `now`), or trust a peer's
//! size or bytes before the SHA-1 matches the info-hash.

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::metadata::{DataOutcome, MetadataFetch};
use crate::metainfo::{InfoHash, Metainfo, MetainfoError};
use crate::peer::buffers::ReadBuf;
use crate::peer::session::{Effect, PeerExtension, PeerSession, TorrentContext};
use crate::peer::DropReason;
use crate::swarm::{PeerNo, Swarm};
use crate::time::Timestamp;
use crate::torrent::InputError;
use crate::wire::ut_metadata::{self, MetadataMessage};
use crate::wire::FrameLimits;

/// Frames a peer may send before the piece count is known: a bitfield of the largest torrent whose
/// metadata we accept (16 MiB of info holds at most 838,860 piece hashes) and a 16 KiB block.
fn limits() -> FrameLimits {
    FrameLimits::for_torrent(crate::metadata::MAX_METADATA_SIZE / 20)
}

pub struct MetadataPhase {
    pub ctx: TorrentContext,
    /// Empty: no piece exists yet.
    pub swarm: Swarm,
    pub fetch: MetadataFetch,
    pub started_at: Timestamp,
    /// The verified info dictionary, once complete (the engine then builds the torrent).
    pub info: Option<Vec<u8>>,
    /// ut_pex payloads received, for the engine.
    pub pex_in: Vec<(PeerNo, Vec<u8>)>,
    /// Peers that sent data failing the hash, or lied about the size: dropped, never asked again.
    pub to_drop: Vec<(PeerNo, DropReason)>,
}

impl MetadataPhase {
    pub fn new(
        info_hash: InfoHash,
        our_peer_id: [u8; 20],
        listen_port: Option<u16>,
        dht_port: Option<u16>,
        now: Timestamp,
    ) -> Self {
        let geometry = Geometry::new(16 * 1024, 0);
        let ctx = TorrentContext {
            info_hash,
            our_peer_id,
            geometry,
            limits: limits(),
            listen_port,
            metadata_size: None,
            private: false,
            dht_port,
            awaiting_metadata: true,
        };
        MetadataPhase {
            ctx,
            swarm: Swarm::new(geometry, Bitfield::new(0), Bitfield::new(0), false),
            fetch: MetadataFetch::new(info_hash),
            started_at: now,
            info: None,
            pex_in: Vec::new(),
            to_drop: Vec::new(),
        }
    }

    /// Handles every whole frame in `read` for a session of this phase (the handshake first, if awaited),
    /// then asks the peer for more metadata pieces if it has them.
    pub fn process_input(
        &mut self,
        read: &mut ReadBuf,
        session: &mut PeerSession,
        now: Timestamp,
    ) -> Result<(), InputError> {
        if !crate::torrent::take_handshake(read, session, &self.ctx, &mut self.swarm, now)? {
            return Ok(());
        }
        while let Some(frame) = read.next_frame(&self.ctx.limits).map_err(DropReason::from)? {
            match session.on_frame(frame, &self.ctx, &mut self.swarm, now)? {
                Effect::ExtendedHandshake => {
                    if let Some(size) = session.extended.as_ref().filter(|hs| hs.ut_metadata.is_some()) {
                        if let Some(size) = size.metadata_size {
                            self.fetch.on_peer_offers(session.no.0, size);
                        }
                    }
                }
                Effect::Metadata(payload) => self.on_metadata(session, payload)?,
                Effect::Pex(payload) => {
                    if self.pex_in.len() < 64 {
                        self.pex_in.push((session.no, payload.to_vec()));
                    }
                }
                Effect::Nothing | Effect::StoreBlock { .. } => {}
            }
        }
        self.request_more(session, now);
        Ok(())
    }

    fn on_metadata(&mut self, session: &mut PeerSession, payload: &[u8]) -> Result<(), InputError> {
        let key = session.no.0;
        match ut_metadata::decode(payload) {
            // We have nothing to give yet.
            Ok(MetadataMessage::Request { piece }) => {
                let mut reply = Vec::with_capacity(48);
                ut_metadata::encode_reject(piece, &mut reply);
                session.send_extended(PeerExtension::Metadata, &reply);
            }
            Ok(MetadataMessage::Reject { piece }) => self.fetch.on_reject(key, piece),
            Ok(MetadataMessage::Data { piece, total_size, data }) => {
                match self.fetch.on_data(key, piece, total_size, data) {
                    DataOutcome::Stored | DataOutcome::Unrequested => {}
                    DataOutcome::Misbehaved(why) => {
                        log::info!("peer {key}: {why}");
                        return Err(DropReason::NotNeeded.into());
                    }
                    DataOutcome::Complete(info) => self.info = Some(info),
                    DataOutcome::HashFailed { banned } => {
                        log::info!("metadata failed its hash check; dropping the {} peers that sent it", banned.len());
                        self.to_drop.extend(banned.into_iter().map(|k| (PeerNo(k), DropReason::Banned)));
                    }
                }
            }
            // A malformed message: ignored (BEP 9 says nothing of dropping; the size checks guard the rest).
            Err(e) => log::debug!("peer {key}: {e}"),
        }
        Ok(())
    }

    /// Sends the peer as many metadata requests as the fetch gives it.
    pub fn request_more(&mut self, session: &mut PeerSession, now: Timestamp) {
        if self.info.is_some() {
            return;
        }
        while let Some(piece) = self.fetch.poll_request(session.no.0, now) {
            let mut request = Vec::with_capacity(32);
            ut_metadata::encode_request(piece, &mut request);
            if !session.send_extended(PeerExtension::Metadata, &request) {
                self.fetch.on_reject(session.no.0, piece);
                return;
            }
        }
    }
}

/// The `.torrent` bytes for a verified info dictionary: `announce`/`announce-list` from the magnet's
/// trackers and `info` verbatim (so the info-hash is the magnet's).
pub fn torrent_bytes(info: &[u8], trackers: &[Vec<String>]) -> Vec<u8> {
    fn string(out: &mut Vec<u8>, s: &[u8]) {
        out.extend_from_slice(s.len().to_string().as_bytes());
        out.push(b':');
        out.extend_from_slice(s);
    }
    let mut out = Vec::with_capacity(info.len() + 256);
    out.push(b'd');
    // Keys in byte order: announce, announce-list, info.
    if let Some(first) = trackers.iter().flatten().next() {
        string(&mut out, b"announce");
        string(&mut out, first.as_bytes());
        string(&mut out, b"announce-list");
        out.push(b'l');
        for tier in trackers.iter().filter(|t| !t.is_empty()) {
            out.push(b'l');
            for url in tier {
                string(&mut out, url.as_bytes());
            }
            out.push(b'e');
        }
        out.push(b'e');
    }
    string(&mut out, b"info");
    out.extend_from_slice(info);
    out.push(b'e');
    out
}

/// The metainfo for a verified info dictionary.
pub fn metainfo(info: &[u8], trackers: &[Vec<String>]) -> Result<Metainfo, MetainfoError> {
    Metainfo::from_vec(torrent_bytes(info, trackers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torrent_bytes_keep_the_info_hash_and_the_trackers() {
        use sha1::{Digest, Sha1};
        let info = b"d6:lengthi5e4:name1:a12:piece lengthi16384e6:pieces20:aaaaaaaaaaaaaaaaaaaae";
        let tiers = vec![vec!["http://127.0.0.1:1/announce".to_string()], vec!["udp://127.0.0.1:2".to_string()]];
        let meta = metainfo(info, &tiers).expect("parses");
        assert_eq!(meta.info_hash.0, <[u8; 20]>::from(Sha1::digest(info)));
        assert_eq!(meta.trackers, tiers);
        assert_eq!(meta.name, "a");
        let bare = metainfo(info, &[]).expect("parses without trackers");
        assert!(bare.trackers.is_empty());
    }
}
