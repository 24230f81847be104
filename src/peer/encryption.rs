//! The stage in front of a connection's BitTorrent stream: plain, or Message Stream Encryption (either
//! side), and the policy that decides which.
//!
//! Owns: deciding from an incoming connection's first bytes whether it opens with MSE, running the
//! responder or the initiator over the bytes in the connection's `ReadBuf` (decrypting the initial payload
//! in place) until the BitTorrent stream starts, and handing back the RC4 streams when RC4 was selected.
//! The torrent an MSE initiator names is looked up through the caller's `req2` map, so one listener serves
//! every torrent.
//! Must not: know the transport (bytes come from the `ReadBuf`, replies go to the caller's `send`), apply
//! the cipher to the stream after the handshake (the connection does, `engine::conn`), or know the torrents.

use crate::metainfo::InfoHash;
use crate::peer::buffers::ReadBuf;
use crate::peer::{DropReason, PeerMisbehaved};
use crate::rng::Entropy;
use crate::wire::mse::{self, Methods};

/// `--encryption`: what rill accepts and offers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum EncryptionPolicy {
    /// Plaintext or RC4, whichever the peer wants. Our connections open in plaintext (no key exchange, no
    /// cipher); a peer that drops a plaintext handshake is dialled again with MSE (and the other way round),
    /// remembered per peer. Incoming MSE selects plaintext when offered.
    #[default]
    Prefer,
    /// RC4 only, both ways: plaintext handshakes and MSE without RC4 are refused.
    Require,
    /// Plaintext only, both ways: MSE is neither started nor answered.
    Off,
}

impl EncryptionPolicy {
    /// What a responder may select.
    fn accept(self) -> Methods {
        match self {
            EncryptionPolicy::Prefer => Methods::BOTH,
            EncryptionPolicy::Require => Methods::RC4_ONLY,
            EncryptionPolicy::Off => Methods::PLAINTEXT_ONLY,
        }
    }

    /// What our initiator offers when it opens with MSE.
    pub fn provide(self) -> Methods {
        self.accept()
    }
}

/// Where a connection stands on encryption.
pub enum Encryption {
    /// Plain BitTorrent (our own plaintext connections, or the peer's first bytes said so).
    Plain,
    /// Incoming, not yet told apart (see `mse::looks_encrypted`).
    Undecided { responder: Box<mse::Responder>, policy: EncryptionPolicy },
    /// The peer opened with MSE; the handshake is running.
    Handshaking(Box<mse::Responder>),
    /// We opened with MSE; the handshake is running (the session's own bytes wait until it is done).
    Initiating(Box<mse::Initiator>),
}

/// How far the stage got with the bytes there are.
#[derive(Debug, PartialEq, Eq)]
pub enum Stage {
    /// More bytes are needed before the BitTorrent stream starts.
    Pending,
    /// The BitTorrent stream starts here: plain, or through `streams` (RC4), whose decryption the caller
    /// applies to the unparsed bytes after the first `decrypted` (the initial payload, already decrypted).
    /// `named` is the torrent an MSE handshake named.
    Ready { named: Option<InfoHash>, streams: Option<Box<mse::Streams>>, decrypted: usize },
}

impl Encryption {
    /// An incoming connection: MSE or not, as its first bytes will say. `entropy` must be the OS source
    /// in production (the responder's private key).
    pub fn incoming(entropy: &mut Entropy, policy: EncryptionPolicy) -> Self {
        Encryption::Undecided { responder: Box::new(mse::Responder::new(entropy, policy.accept())), policy }
    }

    /// Our connection opening with MSE for `info_hash`; also returns Ya and PadA, to send once connected.
    pub fn initiate(entropy: &mut Entropy, info_hash: InfoHash, provide: Methods) -> (Self, Vec<u8>) {
        let (initiator, first) = mse::Initiator::new(entropy, info_hash, provide);
        (Encryption::Initiating(Box::new(initiator)), first)
    }

    /// Our MSE handshake is still running: the session's bytes must wait.
    pub fn is_initiating(&self) -> bool {
        matches!(self, Encryption::Initiating(_))
    }

    /// Drives the stage over the unparsed bytes of `read`. `torrent` maps an MSE `req2` key to a torrent
    /// we serve; `send` queues bytes for the peer (MSE messages).
    pub fn advance(
        &mut self,
        read: &mut ReadBuf,
        torrent: impl Fn(&[u8; 20]) -> Option<InfoHash> + Copy,
        mut send: impl FnMut(&[u8]),
    ) -> Result<Stage, DropReason> {
        loop {
            let step = match std::mem::replace(self, Encryption::Plain) {
                Encryption::Plain => return Ok(Stage::Ready { named: None, streams: None, decrypted: 0 }),
                Encryption::Undecided { responder, policy } => match mse::looks_encrypted(read.unparsed_mut()) {
                    None => {
                        *self = Encryption::Undecided { responder, policy };
                        return Ok(Stage::Pending);
                    }
                    Some(true) => {
                        if policy == EncryptionPolicy::Off {
                            return Err(DropReason::EncryptionPolicy);
                        }
                        *self = Encryption::Handshaking(responder);
                        continue;
                    }
                    Some(false) if policy == EncryptionPolicy::Require => return Err(DropReason::EncryptionPolicy),
                    Some(false) => return Ok(Stage::Ready { named: None, streams: None, decrypted: 0 }),
                },
                Encryption::Handshaking(mut responder) => {
                    let step = responder.on_bytes(read.unparsed_mut(), torrent);
                    *self = Encryption::Handshaking(responder);
                    step
                }
                Encryption::Initiating(mut initiator) => {
                    let step = initiator.on_bytes(read.unparsed_mut());
                    *self = Encryption::Initiating(initiator);
                    step
                }
            };
            match step {
                mse::Step::NeedMore => return Ok(Stage::Pending),
                mse::Step::Reply { consumed, reply } => {
                    read.consume(consumed);
                    send(&reply);
                }
                mse::Step::Done { consumed, reply, info_hash, streams, plaintext_len } => {
                    read.consume(consumed);
                    send(&reply);
                    *self = Encryption::Plain;
                    return Ok(Stage::Ready { named: Some(info_hash), streams, decrypted: plaintext_len });
                }
                mse::Step::Fail => {
                    *self = Encryption::Plain;
                    return Err(PeerMisbehaved::WrongProtocolString.into());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` to a fresh incoming stage one byte at a time, as a slow peer would send them.
    fn incoming_stage(bytes: &[u8], policy: EncryptionPolicy) -> Result<(Encryption, Stage), DropReason> {
        let mut enc = Encryption::incoming(&mut Entropy::seeded(3), policy);
        let mut read = ReadBuf::for_handshake();
        let mut stage = Stage::Pending;
        for &b in bytes {
            read.fill_from(&mut &[b][..]).unwrap();
            stage = enc.advance(&mut read, |_| None, |_| {})?;
            if stage != Stage::Pending {
                break;
            }
        }
        Ok((enc, stage))
    }

    #[test]
    fn a_key_exchange_whose_first_byte_is_19_is_still_taken_for_mse() {
        // One MSE public key in 256 starts with 19, the first byte of a plain handshake.
        let first = (0u64..)
            .map(|seed| Encryption::initiate(&mut Entropy::seeded(seed), InfoHash([5; 20]), Methods::BOTH).1)
            .find(|ya| ya[0] == 19)
            .unwrap();
        let (enc, stage) = incoming_stage(&first, EncryptionPolicy::Prefer).unwrap();
        assert_eq!(stage, Stage::Pending);
        assert!(matches!(enc, Encryption::Handshaking(_)), "the responder runs");
        // Under `--encryption off` it is refused for its policy, not taken for a broken plain handshake.
        assert_eq!(incoming_stage(&first, EncryptionPolicy::Off).err(), Some(DropReason::EncryptionPolicy));
    }

    #[test]
    fn a_plain_handshake_is_known_only_once_its_protocol_string_is_whole() {
        let plain = b"\x13BitTorrent protocol\0\0\0\0\0\0\0\0";
        let (_, stage) = incoming_stage(&plain[..19], EncryptionPolicy::Prefer).unwrap();
        assert_eq!(stage, Stage::Pending, "19 bytes of the string could still be an MSE key");
        let (enc, stage) = incoming_stage(plain, EncryptionPolicy::Prefer).unwrap();
        assert_eq!(stage, Stage::Ready { named: None, streams: None, decrypted: 0 });
        assert!(matches!(enc, Encryption::Plain));
        assert_eq!(incoming_stage(plain, EncryptionPolicy::Require).err(), Some(DropReason::EncryptionPolicy));
    }
}
