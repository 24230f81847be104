//! MSE responder (`wire::mse::Responder`): its parsing of the initiator's bytes.
//!
//! Random bytes cannot get past the Diffie-Hellman exchange, so the target has two modes (bit 0 of the first
//! byte). Raw: the rest of the input is the initiator's stream (Ya, PadA, garbage). Cooperative: this target
//! plays a real initiator written from the spec (Ya from a fixed private key, PadA, the `req1` sync hash, the
//! torrent's `req2 ^ req3`) and the rest of the input is the plaintext of the RC4-encrypted header (VC,
//! crypto_provide, len(PadC), PadC, len(IA), IA), so the fuzzer explores the header parser. Bits 1–2 pick how
//! the stream is cut into reads; bit 3 names another torrent in `req2`.
//!
//! Invariants: never a panic or a loop; `consumed` never exceeds the input and every reply consumes something;
//! Yb is 96 bytes; in cooperative mode the outcome (need more, fail, done) is exactly what the spec says for
//! that header, the initial payload is decrypted in place to the initiator's plaintext, and the reply decrypts
//! to VC and crypto_select = plaintext when offered, else RC4 (with the RC4 streams handed back).
#![no_main]

use std::sync::{Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use num_bigint::BigUint;
use rill::metainfo::InfoHash;
use rill::rng::Entropy;
use rill::wire::mse::{req2_key, Methods, Responder, Step};
use sha1::{Digest, Sha1};

const PRIME_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
const KEY_LEN: usize = 96;
const MAX_PAD: usize = 512;
const INFO_HASH: InfoHash = InfoHash([0x42; 20]);

struct Initiator {
    p: BigUint,
    xa: BigUint,
    ya: [u8; KEY_LEN],
}

fn be96(n: &BigUint) -> [u8; KEY_LEN] {
    let bytes = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    out[KEY_LEN - bytes.len()..].copy_from_slice(&bytes);
    out
}

fn initiator() -> &'static Initiator {
    static INIT: OnceLock<Initiator> = OnceLock::new();
    INIT.get_or_init(|| {
        let p = BigUint::parse_bytes(PRIME_HEX.as_bytes(), 16).expect("prime");
        let xa = BigUint::from_bytes_be(b"fuzzing initiator 01");
        let ya = be96(&BigUint::from(2u32).modpow(&xa, &p));
        Initiator { p, xa, ya }
    })
}

/// S = Yb^xa mod p; the responder's key is fixed by its seeded Rng, so one computation usually serves all runs.
fn secret(yb: &[u8]) -> [u8; KEY_LEN] {
    static CACHE: Mutex<Option<(Vec<u8>, [u8; KEY_LEN])>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((key, s)) = cache.as_ref() {
        if key == yb {
            return *s;
        }
    }
    let init = initiator();
    let s = be96(&BigUint::from_bytes_be(yb).modpow(&init.xa, &init.p));
    *cache = Some((yb.to_vec(), s));
    s
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// RC4 with the spec's 1024-byte discard.
struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    fn new(key: &[u8]) -> Rc4 {
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(key[i % key.len()]);
            s.swap(i, j as usize);
        }
        let mut rc4 = Rc4 { s, i: 0, j: 0 };
        rc4.apply(&mut [0u8; 1024]);
        rc4
    }

    fn apply(&mut self, data: &mut [u8]) {
        for b in data {
            self.i = self.i.wrapping_add(1);
            self.j = self.j.wrapping_add(self.s[self.i as usize]);
            self.s.swap(self.i as usize, self.j as usize);
            *b ^= self.s[self.s[self.i as usize].wrapping_add(self.s[self.j as usize]) as usize];
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    NeedMore,
    Fail,
    /// The header's length and the decrypted initial payload.
    Done {
        header: usize,
        ia: Vec<u8>,
    },
}

/// What the spec says the responder must do with this decrypted header.
fn expected(plain: &[u8]) -> Outcome {
    if plain.len() < 14 {
        return Outcome::NeedMore;
    }
    let provide = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
    let pad_c = usize::from(u16::from_be_bytes([plain[12], plain[13]]));
    if plain[..8] != [0u8; 8] || provide & 3 == 0 || pad_c > MAX_PAD {
        return Outcome::Fail;
    }
    let header = 14 + pad_c + 2;
    if plain.len() < header {
        return Outcome::NeedMore;
    }
    let ia_len = usize::from(u16::from_be_bytes([plain[header - 2], plain[header - 1]]));
    match plain.get(header..header + ia_len) {
        Some(ia) => Outcome::Done { header, ia: ia.to_vec() },
        None => Outcome::NeedMore,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let cooperative = flags & 1 != 0;
    let chunk = [usize::MAX, 1, 13, 97][usize::from(flags >> 1 & 3)];
    let other_torrent = flags & 8 != 0;
    let mut responder = Responder::new(&mut Entropy::seeded(7), Methods::BOTH);
    // The torrents the responder serves: ours, and one more the initiator never names.
    let served = |key: &[u8; 20]| {
        [rill::metainfo::InfoHash([0x44; 20]), INFO_HASH].into_iter().find(|ih| req2_key(ih) == *key)
    };

    // The initiator's stream so far; cooperative mode appends the rest once Yb is known.
    let (mut wire, pad_len, plain) = if cooperative {
        let Some((&pad, plain)) = rest.split_first() else { return };
        let pad_len = usize::from(pad) * 2;
        let mut wire = initiator().ya.to_vec();
        wire.extend((0..pad_len).map(|i| i as u8));
        (wire, pad_len, plain)
    } else {
        (rest.to_vec(), 0, &[][..])
    };
    let mut pending: Vec<u8> = Vec::new();
    let mut fed = 0usize;
    let mut replies = 0usize;
    let mut keys: Option<[u8; KEY_LEN]> = None;
    let outcome = 'run: loop {
        if fed == wire.len() {
            break Outcome::NeedMore;
        }
        let n = chunk.min(wire.len() - fed);
        pending.extend_from_slice(&wire[fed..fed + n]);
        fed += n;
        loop {
            let len = pending.len();
            match responder.on_bytes(&mut pending, served) {
                Step::NeedMore => break,
                Step::Fail => break 'run Outcome::Fail,
                Step::Reply { consumed, reply } => {
                    assert!(consumed > 0 && consumed <= len, "consumed {consumed} of {len}");
                    if replies == 0 {
                        assert_eq!(consumed, KEY_LEN);
                        assert_eq!(reply.len(), KEY_LEN, "Yb");
                        if cooperative {
                            // Now that Yb is known: req1, req2 ^ req3, and the encrypted header.
                            let s = secret(&reply);
                            keys = Some(s);
                            wire.extend_from_slice(&hash(&[b"req1", &s]));
                            let skey = if other_torrent { [0x43; 20] } else { INFO_HASH.0 };
                            let req2 = hash(&[b"req2", &skey]);
                            let req3 = hash(&[b"req3", &s]);
                            wire.extend(req2.iter().zip(req3.iter()).map(|(a, b)| a ^ b));
                            let mut enc = plain.to_vec();
                            Rc4::new(&hash(&[b"keyA", &s, &INFO_HASH.0])).apply(&mut enc);
                            wire.extend_from_slice(&enc);
                        }
                    } else {
                        assert!(reply.is_empty());
                        if cooperative {
                            assert_eq!(consumed, pad_len + 40, "PadA and the two hashes");
                        }
                    }
                    replies += 1;
                    pending.drain(..consumed);
                }
                Step::Done { consumed, plaintext_len, reply, info_hash, streams } => {
                    assert_eq!(info_hash, INFO_HASH, "the torrent the initiator named");
                    assert!(consumed + plaintext_len <= len, "{consumed} + {plaintext_len} of {len}");
                    assert_eq!(reply.len(), 14);
                    assert!(cooperative, "raw bytes cannot complete the key exchange");
                    let s = keys.expect("Yb was sent");
                    let mut answer = reply.clone();
                    Rc4::new(&hash(&[b"keyB", &s, &INFO_HASH.0])).apply(&mut answer);
                    assert_eq!(&answer[..8], &[0u8; 8], "VC");
                    // Plaintext whenever offered (no cipher on the data path), else RC4.
                    let provide = u32::from_be_bytes([plain[8], plain[9], plain[10], plain[11]]);
                    let select = if provide & 1 != 0 { 1 } else { 2 };
                    assert_eq!(&answer[8..], &[0, 0, 0, select, 0, 0], "crypto_select, no PadD");
                    assert_eq!(streams.is_some(), select == 2, "RC4 streams exactly when RC4 is selected");
                    break 'run Outcome::Done {
                        header: consumed,
                        ia: pending[consumed..consumed + plaintext_len].to_vec(),
                    };
                }
            }
        }
    };
    // Another step after the end never panics.
    let _ = responder.on_bytes(&mut pending, served);
    if cooperative && replies >= 1 {
        let want = if other_torrent { Outcome::Fail } else { expected(plain) };
        assert_eq!(outcome, want);
    }
});
