//! Message Stream Encryption (MSE/PE, the Vuze and libtorrent "protocol encryption"): both sides, with
//! plaintext or RC4 after the handshake.
//!
//! libtorrent, qBittorrent, aria2 and Transmission open connections with an encrypted handshake first and
//! retry in plaintext only after the first attempt fails, which costs an incoming connection a second or
//! more; some peers accept nothing but RC4. The `Responder` answers an initiator: the Diffie-Hellman
//! exchange, the torrent check, then `crypto_select` — plaintext whenever the initiator offers it and the
//! policy allows (no cipher on the data path), else RC4. The `Initiator` opens our own connections the same
//! way, offering what the policy allows. When RC4 is selected, both hand back the two keyed streams
//! ([`Streams`]) that carry on where the handshake left them.
//!
//! Owns: both state machines (bytes in, bytes out), the 768-bit modular exponentiation they need, and RC4.
//! Must not: touch sockets or know about peers.
//!
//! Spec: <https://wiki.vuze.com/w/Message_Stream_Encryption>. Sequence, A initiates, B (we) responds:
//! ```text
//! A→B  Ya, PadA
//! B→A  Yb, PadB
//! A→B  HASH('req1', S), HASH('req2', SKEY) xor HASH('req3', S),
//!      ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA)), ENCRYPT(IA)
//! B→A  ENCRYPT(VC, crypto_select, len(PadD), PadD)
//! ```

use sha1::{Digest, Sha1};

use crate::metainfo::InfoHash;
use crate::rng::Entropy;

/// 768-bit safe prime of the spec, big-endian.
const PRIME_HEX: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A63A36210000000000090563";
const KEY_LEN: usize = 96;
const LIMBS: usize = KEY_LEN / 8;
const MAX_PAD: usize = 512;
const CRYPTO_PLAINTEXT: u32 = 0x01;
const CRYPTO_RC4: u32 = 0x02;
/// The most bytes A may send before `HASH('req1', S)` has shown up.
const SYNC_WINDOW: usize = KEY_LEN + MAX_PAD + 20;

type Limbs = [u64; LIMBS];

/// Modular arithmetic for the spec's prime (Montgomery form, 64-bit limbs, little-endian).
struct Field {
    p: Limbs,
    /// -p⁻¹ mod 2⁶⁴.
    n0: u64,
    /// R² mod p, R = 2^768.
    r2: Limbs,
}

fn from_be(bytes: &[u8; KEY_LEN]) -> Limbs {
    let mut out = [0u64; LIMBS];
    for (i, chunk) in bytes.rchunks(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        out[i] = u64::from_be_bytes(b);
    }
    out
}

fn to_be(limbs: &Limbs) -> [u8; KEY_LEN] {
    let mut out = [0u8; KEY_LEN];
    for (i, chunk) in out.rchunks_mut(8).enumerate() {
        chunk.copy_from_slice(&limbs[i].to_be_bytes());
    }
    out
}

fn geq(a: &Limbs, b: &Limbs) -> bool {
    for i in (0..LIMBS).rev() {
        if a[i] != b[i] {
            return a[i] > b[i];
        }
    }
    true
}

fn sub_in_place(a: &mut Limbs, b: &Limbs) {
    let mut borrow = 0u64;
    for i in 0..LIMBS {
        let (d1, o1) = a[i].overflowing_sub(b[i]);
        let (d2, o2) = d1.overflowing_sub(borrow);
        a[i] = d2;
        borrow = u64::from(o1 || o2);
    }
}

impl Field {
    fn new() -> Self {
        let mut be = [0u8; KEY_LEN];
        for (i, b) in be.iter_mut().enumerate() {
            // The constant is valid hex: this cannot fail.
            *b = u8::from_str_radix(&PRIME_HEX[2 * i..2 * i + 2], 16).unwrap_or(0);
        }
        let p = from_be(&be);
        // Newton's iteration for p[0]⁻¹ mod 2⁶⁴ (p is odd).
        let mut inv = 1u64;
        for _ in 0..6 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(p[0].wrapping_mul(inv)));
        }
        // R² mod p by doubling 1 a total of 2 × 768 times.
        let mut r2 = [0u64; LIMBS];
        r2[0] = 1;
        for _ in 0..2 * KEY_LEN * 8 {
            let carry = r2[LIMBS - 1] >> 63;
            for i in (1..LIMBS).rev() {
                r2[i] = (r2[i] << 1) | (r2[i - 1] >> 63);
            }
            r2[0] <<= 1;
            if carry == 1 || geq(&r2, &p) {
                sub_in_place(&mut r2, &p);
            }
        }
        Field { p, n0: inv.wrapping_neg(), r2 }
    }

    /// a·b·R⁻¹ mod p (CIOS Montgomery multiplication).
    fn mul(&self, a: &Limbs, b: &Limbs) -> Limbs {
        let mut t = [0u64; LIMBS + 2];
        for &bi in b.iter() {
            let mut c = 0u64;
            for j in 0..LIMBS {
                let x = u128::from(t[j]) + u128::from(a[j]) * u128::from(bi) + u128::from(c);
                t[j] = x as u64;
                c = (x >> 64) as u64;
            }
            let x = u128::from(t[LIMBS]) + u128::from(c);
            t[LIMBS] = x as u64;
            t[LIMBS + 1] = (x >> 64) as u64;
            let m = t[0].wrapping_mul(self.n0);
            let x = u128::from(t[0]) + u128::from(m) * u128::from(self.p[0]);
            let mut c = (x >> 64) as u64;
            for j in 1..LIMBS {
                let x = u128::from(t[j]) + u128::from(m) * u128::from(self.p[j]) + u128::from(c);
                t[j - 1] = x as u64;
                c = (x >> 64) as u64;
            }
            let x = u128::from(t[LIMBS]) + u128::from(c);
            t[LIMBS - 1] = x as u64;
            t[LIMBS] = t[LIMBS + 1] + (x >> 64) as u64;
            t[LIMBS + 1] = 0;
        }
        let mut r = [0u64; LIMBS];
        r.copy_from_slice(&t[..LIMBS]);
        if t[LIMBS] != 0 || geq(&r, &self.p) {
            sub_in_place(&mut r, &self.p);
        }
        r
    }

    /// base^exp mod p; `exp` big-endian.
    fn pow(&self, base: &Limbs, exp: &[u8]) -> Limbs {
        let mut one = [0u64; LIMBS];
        one[0] = 1;
        let b = self.mul(base, &self.r2);
        let mut r = self.mul(&one, &self.r2);
        for byte in exp {
            for bit in (0..8).rev() {
                r = self.mul(&r, &r);
                if byte >> bit & 1 == 1 {
                    r = self.mul(&r, &b);
                }
            }
        }
        self.mul(&r, &one)
    }
}

/// RC4 keyed as the spec says, with the first 1024 bytes of keystream discarded.
pub struct Rc4 {
    s: [u8; 256],
    i: u8,
    j: u8,
}

impl Rc4 {
    fn new(key: &[u8]) -> Self {
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

    /// XORs the next `data.len()` bytes of keystream into `data` (encrypts or decrypts in place).
    /// The state lives in locals for the loop and every index is a `u8` into 256 entries (no bounds
    /// checks), so the loop is the same few instructions at any optimisation level (release builds are
    /// optimised for size).
    pub fn apply(&mut self, data: &mut [u8]) {
        let s = &mut self.s;
        let (mut i, mut j) = (self.i, self.j);
        for b in data.iter_mut() {
            i = i.wrapping_add(1);
            let si = s[usize::from(i)];
            j = j.wrapping_add(si);
            let sj = s[usize::from(j)];
            s[usize::from(i)] = sj;
            s[usize::from(j)] = si;
            *b ^= s[usize::from(si.wrapping_add(sj))];
        }
        self.i = i;
        self.j = j;
    }
}

fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// What a connection's first bytes are: `Some(true)` an MSE handshake, `Some(false)` a plain BitTorrent
/// one, `None` not known yet. A plain handshake starts with the 20 bytes `\x13BitTorrent protocol`; an MSE
/// one with a random public key, whose first byte is 19 once in 256 connections, so the first byte alone
/// cannot tell (libtorrent also compares the whole protocol string).
pub fn looks_encrypted(first_bytes: &[u8]) -> Option<bool> {
    const PLAIN: &[u8; 20] = b"\x13BitTorrent protocol";
    let seen = first_bytes.len().min(PLAIN.len());
    if first_bytes[..seen] != PLAIN[..seen] {
        Some(true)
    } else if seen == PLAIN.len() {
        Some(false)
    } else {
        None
    }
}

/// The two RC4 streams of a connection that selected RC4, positioned after the handshake: `decrypt` for
/// what the peer sends, `encrypt` for what we send.
pub struct Streams {
    pub decrypt: Rc4,
    pub encrypt: Rc4,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streams(RC4)")
    }
}

impl PartialEq for Streams {
    /// Streams are never compared by their keys; any two are "equal" so steps can be compared in tests.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for Streams {}

/// What the crypto methods after the handshake may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Methods {
    pub plaintext: bool,
    pub rc4: bool,
}

impl Methods {
    pub const BOTH: Methods = Methods { plaintext: true, rc4: true };
    pub const RC4_ONLY: Methods = Methods { plaintext: false, rc4: true };
    pub const PLAINTEXT_ONLY: Methods = Methods { plaintext: true, rc4: false };

    fn bits(self) -> u32 {
        (if self.plaintext { CRYPTO_PLAINTEXT } else { 0 }) | (if self.rc4 { CRYPTO_RC4 } else { 0 })
    }

    /// What a responder selects from `provide`: plaintext when both allow it (no cipher on the data path),
    /// else RC4.
    fn select(self, provide: u32) -> Option<u32> {
        if self.plaintext && provide & CRYPTO_PLAINTEXT != 0 {
            Some(CRYPTO_PLAINTEXT)
        } else if self.rc4 && provide & CRYPTO_RC4 != 0 {
            Some(CRYPTO_RC4)
        } else {
            None
        }
    }
}

/// What a state machine needs from the caller after looking at the bytes it has.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Not enough bytes yet.
    NeedMore,
    /// `consumed` input bytes are done with; send `reply`; keep feeding.
    Reply { consumed: usize, reply: Vec<u8> },
    /// The handshake is over: `consumed` bytes are done with, the next `plaintext_len` bytes of the input
    /// have been decrypted in place (the initial payload, normally the BitTorrent handshake; always 0 for
    /// the initiator), and every byte after them is the BitTorrent stream: plain, or RC4 through `streams`.
    /// Send `reply`.
    Done { consumed: usize, plaintext_len: usize, reply: Vec<u8>, info_hash: InfoHash, streams: Option<Box<Streams>> },
    /// Not MSE, another torrent, or no method both sides allow: drop the connection.
    Fail,
}

enum State {
    AwaitingKey,
    /// Ya is in; looking for HASH('req1', S) after PadA.
    AwaitingSync {
        secret: [u8; KEY_LEN],
    },
    /// Decrypting the header that follows the sync marker.
    AwaitingHeader {
        from_a: Box<Rc4>,
        to_a: Box<Rc4>,
        info_hash: InfoHash,
    },
    Finished,
}

/// HASH('req2', info_hash): what an initiator's SKEY field reveals (xored with HASH('req3', S)). A
/// responder serving several torrents keeps this for each, to find the torrent a connection asks for.
pub fn req2_key(info_hash: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", &info_hash.0])
}

/// One incoming connection's MSE handshake. It does not know the torrent in advance: the initiator names
/// it (as HASH('req2', SKEY)), and the caller's lookup maps that to one of its torrents.
pub struct Responder {
    private_key: [u8; 20],
    state: State,
    accept: Methods,
}

impl Responder {
    /// `entropy` must be the OS source in production: whoever guesses the private key reads the stream.
    /// `accept`: the methods we select from (plaintext first).
    pub fn new(entropy: &mut Entropy, accept: Methods) -> Self {
        let mut private_key = [0u8; 20];
        entropy.fill(&mut private_key);
        Responder { private_key, state: State::AwaitingKey, accept }
    }

    /// Looks at the bytes received so far (all of them, from the start of the connection's unconsumed
    /// input); may decrypt the initial payload in place. `torrent` maps a [`req2_key`] to the info-hash of
    /// a torrent we serve (`None`: not ours, and the handshake fails).
    pub fn on_bytes(&mut self, input: &mut [u8], torrent: impl Fn(&[u8; 20]) -> Option<InfoHash>) -> Step {
        match &mut self.state {
            State::AwaitingKey => {
                if input.len() < KEY_LEN {
                    return Step::NeedMore;
                }
                let field = Field::new();
                let mut ya_be = [0u8; KEY_LEN];
                ya_be.copy_from_slice(&input[..KEY_LEN]);
                let ya = from_be(&ya_be);
                if geq(&ya, &field.p) {
                    return Step::Fail;
                }
                let mut two = [0u64; LIMBS];
                two[0] = 2;
                let yb = to_be(&field.pow(&two, &self.private_key));
                let secret = to_be(&field.pow(&ya, &self.private_key));
                self.state = State::AwaitingSync { secret };
                Step::Reply { consumed: KEY_LEN, reply: yb.to_vec() }
            }
            State::AwaitingSync { secret } => {
                let secret = *secret;
                let req1 = hash(&[b"req1", &secret]);
                let Some(at) = input.windows(20).position(|w| w == req1) else {
                    return if input.len() > SYNC_WINDOW { Step::Fail } else { Step::NeedMore };
                };
                // HASH('req2', SKEY) xor HASH('req3', S) names the torrent.
                let after = at + 20;
                if input.len() < after + 20 {
                    return Step::NeedMore;
                }
                let req3 = hash(&[b"req3", &secret]);
                let mut req2 = [0u8; 20];
                for (i, b) in req2.iter_mut().enumerate() {
                    *b = input[after + i] ^ req3[i];
                }
                let Some(info_hash) = torrent(&req2) else {
                    return Step::Fail;
                };
                let from_a = Box::new(Rc4::new(&hash(&[b"keyA", &secret, &info_hash.0])));
                let to_a = Box::new(Rc4::new(&hash(&[b"keyB", &secret, &info_hash.0])));
                self.state = State::AwaitingHeader { from_a, to_a, info_hash };
                Step::Reply { consumed: after + 20, reply: Vec::new() }
            }
            State::AwaitingHeader { from_a, to_a, info_hash } => {
                let info_hash = *info_hash;
                // VC(8), crypto_provide(4), len(PadC)(2): decrypt a copy, so a partial header can be retried.
                if input.len() < 14 {
                    return Step::NeedMore;
                }
                let mut probe = from_a_clone(from_a);
                let mut head = [0u8; 14];
                head.copy_from_slice(&input[..14]);
                probe.apply(&mut head);
                if head[..8] != [0u8; 8] {
                    return Step::Fail;
                }
                let provide = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                let pad_c = usize::from(u16::from_be_bytes([head[12], head[13]]));
                let Some(select) = self.accept.select(provide).filter(|_| pad_c <= MAX_PAD) else {
                    return Step::Fail;
                };
                if input.len() < 14 + pad_c + 2 {
                    return Step::NeedMore;
                }
                let mut rest = [0u8; MAX_PAD + 2];
                rest[..pad_c + 2].copy_from_slice(&input[14..14 + pad_c + 2]);
                probe.apply(&mut rest[..pad_c + 2]);
                let ia_len = usize::from(u16::from_be_bytes([rest[pad_c], rest[pad_c + 1]]));
                let header = 14 + pad_c + 2;
                if input.len() < header + ia_len {
                    return Step::NeedMore;
                }
                // The whole header and IA are here: decrypt IA in place with the stream that follows.
                probe.apply(&mut input[header..header + ia_len]);
                let mut reply = Vec::with_capacity(14);
                reply.extend_from_slice(&[0u8; 8]);
                reply.extend_from_slice(&select.to_be_bytes());
                reply.extend_from_slice(&0u16.to_be_bytes());
                to_a.apply(&mut reply);
                let streams =
                    (select == CRYPTO_RC4).then(|| Box::new(Streams { decrypt: probe, encrypt: from_a_clone(to_a) }));
                self.state = State::Finished;
                Step::Done { consumed: header, plaintext_len: ia_len, reply, info_hash, streams }
            }
            State::Finished => Step::Fail,
        }
    }
}

enum InitiatorState {
    /// Ya and PadA are sent; waiting for Yb.
    AwaitingKey,
    /// Our header is sent; looking for ENCRYPT(VC) from B after PadB, then B's header.
    AwaitingSelect {
        from_b: Box<Rc4>,
        to_b: Box<Rc4>,
        /// ENCRYPT(VC): the first 8 bytes of B's keystream, what we search for.
        vc: [u8; 8],
    },
    Finished,
}

/// One outgoing connection's MSE handshake, for a torrent we name.
pub struct Initiator {
    private_key: [u8; 20],
    info_hash: InfoHash,
    provide: Methods,
    state: InitiatorState,
}

impl Initiator {
    /// Also returns the first bytes to send (Ya and a short random PadA). `entropy` must be the OS source
    /// in production.
    pub fn new(entropy: &mut Entropy, info_hash: InfoHash, provide: Methods) -> (Self, Vec<u8>) {
        let mut private_key = [0u8; 20];
        entropy.fill(&mut private_key);
        let mut two = [0u64; LIMBS];
        two[0] = 2;
        let ya = to_be(&Field::new().pow(&two, &private_key));
        let mut pad = [0u8; 1];
        entropy.fill(&mut pad);
        let mut first = Vec::with_capacity(KEY_LEN + 64);
        first.extend_from_slice(&ya);
        // PadA: 0 to 63 random bytes (the spec allows 512; a short pad keeps the first packet small).
        let mut pad_a = vec![0u8; usize::from(pad[0] % 64)];
        entropy.fill(&mut pad_a);
        first.extend_from_slice(&pad_a);
        (Initiator { private_key, info_hash, provide, state: InitiatorState::AwaitingKey }, first)
    }

    /// Looks at the bytes received so far (from the start of the connection's unconsumed input).
    pub fn on_bytes(&mut self, input: &mut [u8]) -> Step {
        match &mut self.state {
            InitiatorState::AwaitingKey => {
                if input.len() < KEY_LEN {
                    return Step::NeedMore;
                }
                let field = Field::new();
                let mut yb_be = [0u8; KEY_LEN];
                yb_be.copy_from_slice(&input[..KEY_LEN]);
                let yb = from_be(&yb_be);
                if geq(&yb, &field.p) {
                    return Step::Fail;
                }
                let secret = to_be(&field.pow(&yb, &self.private_key));
                let skey = &self.info_hash.0;
                let mut to_b = Box::new(Rc4::new(&hash(&[b"keyA", &secret, skey])));
                let from_b = Box::new(Rc4::new(&hash(&[b"keyB", &secret, skey])));
                let mut vc = [0u8; 8];
                from_a_clone(&from_b).apply(&mut vc);
                let mut reply = Vec::with_capacity(40 + 16);
                reply.extend_from_slice(&hash(&[b"req1", &secret]));
                let req2 = hash(&[b"req2", skey]);
                let req3 = hash(&[b"req3", &secret]);
                reply.extend(req2.iter().zip(req3.iter()).map(|(a, b)| a ^ b));
                // ENCRYPT(VC, crypto_provide, len(PadC) = 0, len(IA) = 0): the BitTorrent handshake follows
                // once B has selected, in the selected method.
                let mut header = [0u8; 16];
                header[8..12].copy_from_slice(&self.provide.bits().to_be_bytes());
                to_b.apply(&mut header);
                reply.extend_from_slice(&header);
                self.state = InitiatorState::AwaitingSelect { from_b, to_b, vc };
                Step::Reply { consumed: KEY_LEN, reply }
            }
            InitiatorState::AwaitingSelect { from_b, to_b, vc } => {
                // PadB (0 to 512 bytes) comes before ENCRYPT(VC).
                let Some(at) = input.windows(8).position(|w| w == vc) else {
                    return if input.len() > MAX_PAD + 8 { Step::Fail } else { Step::NeedMore };
                };
                if input.len() < at + 14 {
                    return Step::NeedMore;
                }
                let mut probe = from_a_clone(from_b);
                let mut head = [0u8; 14];
                head.copy_from_slice(&input[at..at + 14]);
                probe.apply(&mut head);
                let select = u32::from_be_bytes([head[8], head[9], head[10], head[11]]);
                let pad_d = usize::from(u16::from_be_bytes([head[12], head[13]]));
                let chosen_ok = match select {
                    CRYPTO_PLAINTEXT => self.provide.plaintext,
                    CRYPTO_RC4 => self.provide.rc4,
                    _ => false,
                };
                if !chosen_ok || pad_d > MAX_PAD {
                    return Step::Fail;
                }
                if input.len() < at + 14 + pad_d {
                    return Step::NeedMore;
                }
                let mut pad = [0u8; MAX_PAD];
                probe.apply(&mut pad[..pad_d]);
                let streams =
                    (select == CRYPTO_RC4).then(|| Box::new(Streams { decrypt: probe, encrypt: from_a_clone(to_b) }));
                self.state = InitiatorState::Finished;
                Step::Done {
                    consumed: at + 14 + pad_d,
                    plaintext_len: 0,
                    reply: Vec::new(),
                    info_hash: self.info_hash,
                    streams,
                }
            }
            InitiatorState::Finished => Step::Fail,
        }
    }
}

fn from_a_clone(rc4: &Rc4) -> Rc4 {
    Rc4 { s: rc4.s, i: rc4.i, j: rc4.j }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn key(hex_str: &str) -> Vec<u8> {
        (0..hex_str.len()).step_by(2).map(|i| u8::from_str_radix(&hex_str[i..i + 2], 16).unwrap()).collect()
    }

    #[test]
    fn modular_exponentiation_matches_known_values() {
        // Computed independently with Python's pow().
        let field = Field::new();
        let mut two = [0u64; LIMBS];
        two[0] = 2;
        let x = key("1234567890abcdef1234567890abcdef12345678");
        assert_eq!(
            hex(&to_be(&field.pow(&two, &x))),
            "c44386497c31c0f76d76479d03a6f40c0cdac6c9a709f493da2c7aa8adb2cbfafe6b7833c0ded4ab5a310db1c2473066\
             f1d3ef0a9e89f1093e7902f72337396dab1d1276ab9e6d447b62e57de71ec5b528209d8fadff8cb9b0d393131aa4a722"
        );
        let y = field.pow(&two, &key("deadbeef"));
        assert_eq!(
            hex(&to_be(&field.pow(&y, &x))),
            "144cf3b847f488228dbe3d955dcce1006c6f86e60525e84a31c3fa9152540a7b27f7c7e930423a0e03896e5ba82842be\
             62b5f1712a2c86fdafe3dd16f48cb4e16610ea833b8b55bb8a48514e6d25b39171f2a81429411aee8f75b2a5e0a535ee"
        );
    }

    #[test]
    fn the_first_bytes_tell_mse_from_plain_only_once_they_differ_or_the_string_is_whole() {
        let plain = b"\x13BitTorrent protocol\0\0";
        assert_eq!(looks_encrypted(b""), None);
        assert_eq!(looks_encrypted(&plain[..1]), None);
        assert_eq!(looks_encrypted(&plain[..19]), None);
        assert_eq!(looks_encrypted(&plain[..20]), Some(false));
        assert_eq!(looks_encrypted(plain), Some(false));
        assert_eq!(looks_encrypted(b"\x13BitTorrent prot0"), Some(true));
        assert_eq!(looks_encrypted(&[19, 0x80]), Some(true));
        assert_eq!(looks_encrypted(&[0x55]), Some(true));
    }

    #[test]
    fn rc4_matches_the_classic_test_vector() {
        // "Key" / "Plaintext" from the RC4 test vectors, without the 1024-byte discard.
        let mut s = [0u8; 256];
        for (i, v) in s.iter_mut().enumerate() {
            *v = i as u8;
        }
        let k = b"Key";
        let mut j = 0u8;
        for i in 0..256 {
            j = j.wrapping_add(s[i]).wrapping_add(k[i % k.len()]);
            s.swap(i, j as usize);
        }
        let mut rc4 = Rc4 { s, i: 0, j: 0 };
        let mut data = *b"Plaintext";
        rc4.apply(&mut data);
        assert_eq!(hex(&data), "bbf316e8d940af0ad3");
    }

    /// A minimal initiator, written from the spec, to drive the responder.
    #[test]
    fn responder_completes_with_an_initiator_and_selects_plaintext() {
        let mut rng = Entropy::seeded(11);
        let info_hash = InfoHash([0x42; 20]);
        let field = Field::new();
        let xa = key("00112233445566778899aabbccddeeff00112233");
        let mut two = [0u64; LIMBS];
        two[0] = 2;
        let ya = to_be(&field.pow(&two, &xa));
        let mut responder = Responder::new(&mut rng, Methods::BOTH);
        // The responder serves two torrents; the initiator asks for the second.
        let other = InfoHash([0x41; 20]);
        let find = |k: &[u8; 20]| [other, info_hash].into_iter().find(|ih| req2_key(ih) == *k);
        // A: Ya + 7 bytes of PadA.
        let mut wire = ya.to_vec();
        wire.extend_from_slice(&[9u8; 7]);
        let Step::Reply { consumed, reply: yb } = responder.on_bytes(&mut wire, find) else { panic!("no Yb") };
        assert_eq!((consumed, yb.len()), (KEY_LEN, KEY_LEN));
        wire.drain(..consumed);
        let mut yb_arr = [0u8; KEY_LEN];
        yb_arr.copy_from_slice(&yb);
        let secret = to_be(&field.pow(&from_be(&yb_arr), &xa));
        // A: req1, req2^req3, then ENCRYPT(VC, provide = plaintext|rc4, len(PadC) = 3, PadC, len(IA)), ENCRYPT(IA).
        wire.extend_from_slice(&hash(&[b"req1", &secret]));
        let req2 = hash(&[b"req2", &info_hash.0]);
        let req3 = hash(&[b"req3", &secret]);
        wire.extend(req2.iter().zip(req3.iter()).map(|(a, b)| a ^ b));
        let mut to_b = Rc4::new(&hash(&[b"keyA", &secret, &info_hash.0]));
        let ia = b"\x13BitTorrent protocol-and-the-rest";
        let mut enc = vec![0u8; 8];
        enc.extend_from_slice(&3u32.to_be_bytes());
        enc.extend_from_slice(&3u16.to_be_bytes());
        enc.extend_from_slice(&[1, 2, 3]);
        enc.extend_from_slice(&(ia.len() as u16).to_be_bytes());
        enc.extend_from_slice(ia);
        to_b.apply(&mut enc);
        wire.extend_from_slice(&enc);
        wire.extend_from_slice(b"PLAIN");
        // Bytes may arrive in pieces: a short input asks for more.
        let Step::Reply { consumed, .. } = responder.on_bytes(&mut wire, find) else { panic!("no sync") };
        wire.drain(..consumed);
        assert_eq!(responder.on_bytes(&mut wire[..10], find), Step::NeedMore);
        let Step::Done { consumed, plaintext_len, reply, info_hash: chosen, streams } =
            responder.on_bytes(&mut wire, find)
        else {
            panic!("not done")
        };
        assert_eq!(chosen, info_hash, "the torrent the initiator named");
        assert!(streams.is_none(), "plaintext selected: no cipher");
        assert_eq!(&wire[consumed..consumed + plaintext_len], &ia[..]);
        assert_eq!(&wire[consumed + plaintext_len..], b"PLAIN");
        let mut from_b = Rc4::new(&hash(&[b"keyB", &secret, &info_hash.0]));
        let mut answer = reply.clone();
        from_b.apply(&mut answer);
        assert_eq!(&answer[..8], &[0u8; 8], "VC");
        assert_eq!(u32::from_be_bytes([answer[8], answer[9], answer[10], answer[11]]), CRYPTO_PLAINTEXT);
    }

    #[test]
    fn another_torrent_or_garbage_fails() {
        let mut rng = Entropy::seeded(12);
        let ours = |k: &[u8; 20]| (req2_key(&InfoHash([1; 20])) == *k).then_some(InfoHash([1; 20]));
        let mut responder = Responder::new(&mut rng, Methods::BOTH);
        let mut junk = vec![0xffu8; KEY_LEN];
        assert_eq!(responder.on_bytes(&mut junk, ours), Step::Fail, "Ya not below the prime");
        let mut responder = Responder::new(&mut rng, Methods::BOTH);
        let mut wire = vec![7u8; KEY_LEN];
        assert!(matches!(responder.on_bytes(&mut wire, ours), Step::Reply { .. }));
        let mut noise = vec![5u8; SYNC_WINDOW + 1];
        assert_eq!(responder.on_bytes(&mut noise, ours), Step::Fail, "no sync marker in the window");
    }

    /// Runs our initiator against our responder, feeding each side in chunks of `chunk` bytes and with `pad_b`
    /// extra bytes after Yb (as a responder's PadB). Returns both `Done` streams, or `None` on a failure.
    #[allow(clippy::type_complexity)]
    fn run_pair(
        provide: Methods,
        accept: Methods,
        chunk: usize,
        pad_b: usize,
    ) -> Option<(Option<Box<Streams>>, Option<Box<Streams>>, Vec<u8>)> {
        let mut e = Entropy::seeded(chunk as u64 * 31 + pad_b as u64);
        let info_hash = InfoHash([7; 20]);
        let find = |k: &[u8; 20]| (req2_key(&info_hash) == *k).then_some(info_hash);
        let (mut initiator, first) = Initiator::new(&mut e, info_hash, provide);
        let mut responder = Responder::new(&mut e, accept);
        let (mut to_b, mut to_a) = (first, Vec::new());
        let (mut b_in, mut a_in) = (Vec::new(), Vec::new());
        let (mut a_done, mut b_done) = (None, None);
        let mut b_payload = Vec::new();
        for _ in 0..10_000 {
            if let (Some(_), Some(_)) = (&a_done, &b_done) {
                return Some((a_done.take().flatten(), b_done.take().flatten(), b_payload));
            }
            // Move up to `chunk` bytes each way, then let each side look.
            let n = chunk.min(to_b.len());
            b_in.extend(to_b.drain(..n));
            let n = chunk.min(to_a.len());
            a_in.extend(to_a.drain(..n));
            if b_done.is_none() {
                match responder.on_bytes(&mut b_in, find) {
                    Step::NeedMore => {}
                    Step::Reply { consumed, reply } => {
                        b_in.drain(..consumed);
                        to_a.extend_from_slice(&reply);
                        if reply.len() == KEY_LEN {
                            to_a.extend(std::iter::repeat(0xA5).take(pad_b));
                        }
                    }
                    Step::Done { consumed, plaintext_len, reply, streams, .. } => {
                        b_in.drain(..consumed);
                        b_payload = b_in.drain(..plaintext_len).collect();
                        to_a.extend_from_slice(&reply);
                        b_done = Some(streams);
                    }
                    Step::Fail => return None,
                }
            }
            if a_done.is_none() {
                match initiator.on_bytes(&mut a_in) {
                    Step::NeedMore => {}
                    Step::Reply { consumed, reply } => {
                        a_in.drain(..consumed);
                        to_b.extend_from_slice(&reply);
                    }
                    Step::Done { consumed, streams, .. } => {
                        a_in.drain(..consumed);
                        assert!(a_in.is_empty(), "nothing after the responder's header");
                        a_done = Some(streams);
                    }
                    Step::Fail => return None,
                }
            }
        }
        panic!("the handshake did not finish");
    }

    #[test]
    fn initiator_and_responder_agree_on_every_method_pair() {
        for chunk in [1, 7, 2000] {
            for pad_b in [0, 1, 300, 512] {
                // Both allow plaintext: plaintext, no cipher on either side.
                let (a, b, payload) = run_pair(Methods::BOTH, Methods::BOTH, chunk, pad_b).expect("plaintext");
                assert!(a.is_none() && b.is_none() && payload.is_empty());
                let (a, b, _) = run_pair(Methods::PLAINTEXT_ONLY, Methods::BOTH, chunk, pad_b).expect("plain");
                assert!(a.is_none() && b.is_none());
                // One side insists on RC4: RC4, and each side's encrypt is the other's decrypt.
                for (provide, accept) in [(Methods::RC4_ONLY, Methods::BOTH), (Methods::BOTH, Methods::RC4_ONLY)] {
                    let (a, b, _) = run_pair(provide, accept, chunk, pad_b).expect("rc4");
                    let (mut a, mut b) = (a.expect("initiator streams"), b.expect("responder streams"));
                    let mut msg = *b"\x13BitTorrent protocol and a block of data";
                    a.encrypt.apply(&mut msg);
                    assert_ne!(&msg[..], b"\x13BitTorrent protocol and a block of data");
                    b.decrypt.apply(&mut msg);
                    assert_eq!(&msg[..], b"\x13BitTorrent protocol and a block of data");
                    let mut back = *b"and back";
                    b.encrypt.apply(&mut back);
                    a.decrypt.apply(&mut back);
                    assert_eq!(&back, b"and back");
                }
                // Nothing in common: both give up.
                assert!(run_pair(Methods::PLAINTEXT_ONLY, Methods::RC4_ONLY, chunk, pad_b).is_none());
                assert!(run_pair(Methods::RC4_ONLY, Methods::PLAINTEXT_ONLY, chunk, pad_b).is_none());
            }
        }
    }

    #[test]
    fn an_initiator_gives_up_on_garbage() {
        let mut e = Entropy::seeded(5);
        let (mut initiator, first) = Initiator::new(&mut e, InfoHash([1; 20]), Methods::BOTH);
        assert!(first.len() >= KEY_LEN && first.len() < KEY_LEN + 64);
        assert_eq!(initiator.on_bytes(&mut [0xff; KEY_LEN]), Step::Fail, "Yb not below the prime");
        let (mut initiator, _) = Initiator::new(&mut e, InfoHash([1; 20]), Methods::BOTH);
        assert!(matches!(initiator.on_bytes(&mut [3; KEY_LEN]), Step::Reply { .. }));
        assert_eq!(initiator.on_bytes(&mut [5; 100]), Step::NeedMore);
        assert_eq!(initiator.on_bytes(&mut [5; MAX_PAD + 9]), Step::Fail, "no VC within PadB's bound");
    }
}
