//! The stage in front of a connection's BitTorrent stream: plain, or Message Stream Encryption.
//!
//! Owns: deciding from an incoming connection's first byte whether it opens with MSE, and running the
//! responder over the bytes in the connection's `ReadBuf` (decrypting its initial payload in place) until
//! the stream is plain BitTorrent. The torrent an MSE initiator names is looked up through the caller's
//! `req2` map, so one listener serves every torrent.
//! Must not: know the transport (bytes come from the `ReadBuf`, replies go to the caller's `send`), or
//! the torrents themselves.

use crate::metainfo::InfoHash;
use crate::peer::buffers::ReadBuf;
use crate::peer::{DropReason, PeerMisbehaved};
use crate::rng::Entropy;
use crate::wire::mse;

/// Where a connection stands on encryption.
pub enum Encryption {
    /// Plain BitTorrent (our own connections, or the peer's first byte said so).
    Plain,
    /// Incoming, first byte not seen yet.
    Undecided(Box<mse::Responder>),
    /// The peer opened with MSE; the handshake is running.
    Handshaking(Box<mse::Responder>),
}

/// How far the stage got with the bytes there are.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// More bytes are needed before the BitTorrent stream starts.
    Pending,
    /// The stream is plain BitTorrent from here; `named` is the torrent an MSE handshake named.
    Plain { named: Option<InfoHash> },
}

impl Encryption {
    /// An incoming connection: MSE or not, as its first byte will say. `entropy` must be the OS source
    /// in production (the responder's private key).
    pub fn incoming(entropy: &mut Entropy) -> Self {
        Encryption::Undecided(Box::new(mse::Responder::new(entropy)))
    }

    /// Drives the stage over the unparsed bytes of `read`. `torrent` maps an MSE `req2` key to a torrent
    /// we serve; `send` queues bytes for the peer (MSE replies).
    pub fn advance(
        &mut self,
        read: &mut ReadBuf,
        torrent: impl Fn(&[u8; 20]) -> Option<InfoHash> + Copy,
        mut send: impl FnMut(&[u8]),
    ) -> Result<Stage, DropReason> {
        loop {
            match std::mem::replace(self, Encryption::Plain) {
                Encryption::Plain => return Ok(Stage::Plain { named: None }),
                Encryption::Undecided(responder) => match read.unparsed_mut().first() {
                    None => {
                        *self = Encryption::Undecided(responder);
                        return Ok(Stage::Pending);
                    }
                    Some(&first) if mse::looks_encrypted(first) => *self = Encryption::Handshaking(responder),
                    Some(_) => return Ok(Stage::Plain { named: None }),
                },
                Encryption::Handshaking(mut responder) => match responder.on_bytes(read.unparsed_mut(), torrent) {
                    mse::Step::NeedMore => {
                        *self = Encryption::Handshaking(responder);
                        return Ok(Stage::Pending);
                    }
                    mse::Step::Reply { consumed, reply } => {
                        read.consume(consumed);
                        send(&reply);
                        *self = Encryption::Handshaking(responder);
                    }
                    mse::Step::Done { consumed, reply, info_hash, .. } => {
                        read.consume(consumed);
                        send(&reply);
                        return Ok(Stage::Plain { named: Some(info_hash) });
                    }
                    mse::Step::Fail => return Err(PeerMisbehaved::WrongProtocolString.into()),
                },
            }
        }
    }
}
