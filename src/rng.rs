//! Randomness, in two kinds that must not be mixed up:
//! - `Rng`: a small seeded pseudo-random generator (xoshiro256**), so every choice that only has to be
//!   fair (picking, shuffling, the choker, the simulation) is reproducible. It is not cryptographic: its
//!   whole state follows from a few consecutive outputs.
//! - `Entropy`: values an outsider must not guess — the peer id's random part (sent to every peer), MSE
//!   private keys, UDP tracker transaction ids and the tracker `key` (BEP 15 and the HTTP `key` are
//!   anti-spoofing). In production it is the operating system's CSPRNG (getrandom(2) through the
//!   `getrandom` crate); tests and the simulation use `Entropy::seeded`, so machines still never read
//!   the OS themselves in tests.
//!
//! Owns: both generators, and the only call to `getrandom` in rill (tests/layering.rs checks that).
//! Must not: decide what the values are for.

use sha1::{Digest, Sha1};

/// xoshiro256** by Blackman and Vigna; not cryptographic, which nothing here needs.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Any seed works, zero included: splitmix64 spreads it over the state.
    pub fn seeded(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A value in `0..n`; `n` must be non-zero.
    pub fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        // Lemire's multiply-shift; the tiny bias is irrelevant for peer selection.
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }

    /// For the seeded mutation tests of every decoder: one corpus entry, mutated one way chosen at random —
    /// 1–3 bit flips, a truncation, a byte from `alphabet` (a format's structural bytes), the tail of another
    /// entry spliced on, a digit inflated to a huge number, or `alphabet` noise.
    #[cfg(test)]
    pub fn mutate(&mut self, corpus: &[&[u8]], alphabet: &[u8]) -> Vec<u8> {
        let mut input = corpus[self.below(corpus.len() as u64) as usize].to_vec();
        let pick = |rng: &mut Rng, len: usize| rng.below(len.max(1) as u64) as usize;
        match self.below(6) {
            0 if !input.is_empty() => {
                for _ in 0..=self.below(3) {
                    let bit = pick(self, input.len() * 8);
                    input[bit / 8] ^= 1 << (bit % 8);
                }
            }
            1 => input.truncate(pick(self, input.len())),
            2 if !input.is_empty() => {
                let at = pick(self, input.len());
                input[at] = alphabet[pick(self, alphabet.len())];
            }
            3 => {
                let other = corpus[pick(self, corpus.len())];
                input.truncate(pick(self, input.len()));
                input.extend_from_slice(&other[pick(self, other.len()).min(other.len())..]);
            }
            4 => {
                if let Some(i) = (0..input.len()).filter(|&i| input[i].is_ascii_digit()).nth(pick(self, 16)) {
                    input.splice(i..i + 1, b"99999999999999999999".iter().copied());
                }
            }
            _ => input = (0..self.below(80)).map(|_| alphabet[pick(self, alphabet.len())]).collect(),
        }
        input
    }
}

/// The OS CSPRNG cannot be read at start.
#[derive(Debug)]
pub struct EntropyError(getrandom::Error);

impl std::fmt::Display for EntropyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot read the operating system's random generator: {}", self.0)
    }
}

impl std::error::Error for EntropyError {}

/// Where values that must not be guessed come from. Hand it (or a `fork`) to whatever makes such
/// values; never draw them from an `Rng`.
#[derive(Debug)]
pub enum Entropy {
    /// The operating system's CSPRNG, read on every draw. `reserve` is 32 bytes read from it at start,
    /// used only if a later read fails (getrandom(2) does not fail once the pool is initialised, which
    /// the start-up read proves; the reserve keeps a failure from becoming a panic): then a draw is
    /// SHA-1(reserve ‖ counter), which stays unguessable without the reserve.
    Os { reserve: [u8; 32], counter: u64 },
    /// A seeded xoshiro: reproducible, so guessable. Tests and the simulation only.
    Seeded(Rng),
}

impl Entropy {
    /// The production source. Fails only if the OS generator cannot be read at all.
    pub fn os() -> Result<Self, EntropyError> {
        let mut reserve = [0u8; 32];
        getrandom::fill(&mut reserve).map_err(EntropyError)?;
        Ok(Entropy::Os { reserve, counter: 0 })
    }

    /// A reproducible source for tests.
    pub fn seeded(seed: u64) -> Self {
        Entropy::Seeded(Rng::seeded(seed))
    }

    pub fn is_os(&self) -> bool {
        matches!(self, Entropy::Os { .. })
    }

    /// An independent source of the same kind (for a machine that keeps its own).
    pub fn fork(&mut self) -> Entropy {
        match self {
            Entropy::Os { .. } => {
                let mut reserve = [0u8; 32];
                self.fill(&mut reserve);
                Entropy::Os { reserve, counter: 0 }
            }
            Entropy::Seeded(rng) => Entropy::Seeded(Rng::seeded(rng.next_u64())),
        }
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        match self {
            Entropy::Os { reserve, counter } => {
                if getrandom::fill(out).is_err() {
                    for chunk in out.chunks_mut(20) {
                        *counter += 1;
                        let block = Sha1::new().chain_update(*reserve).chain_update(counter.to_le_bytes()).finalize();
                        chunk.copy_from_slice(&block[..chunk.len()]);
                    }
                }
            }
            Entropy::Seeded(rng) => rng.fill(out),
        }
    }

    pub fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill(&mut b);
        u32::from_le_bytes(b)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill(&mut b);
        u64::from_le_bytes(b)
    }

    /// Fills `out` with characters of `alphabet`, uniformly (rejection sampling, no modulo bias).
    /// `alphabet` must have 1 to 256 entries.
    pub fn fill_from_alphabet(&mut self, out: &mut [u8], alphabet: &[u8]) {
        debug_assert!(!alphabet.is_empty() && alphabet.len() <= 256);
        let n = alphabet.len();
        let limit = 256 - 256 % n;
        let mut pool = [0u8; 32];
        let mut used = pool.len();
        for slot in out.iter_mut() {
            loop {
                if used == pool.len() {
                    self.fill(&mut pool);
                    used = 0;
                }
                let b = usize::from(pool[used]);
                used += 1;
                if b < limit {
                    *slot = alphabet[b % n];
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_entropy_differs_between_sources_and_draws() {
        let mut a = Entropy::os().expect("the OS generator");
        let mut b = Entropy::os().expect("the OS generator");
        assert!(a.is_os() && b.is_os() && a.fork().is_os());
        let (x, y) = (a.next_u64(), b.next_u64());
        assert_ne!(x, y, "two OS sources gave the same 64 bits");
        assert_ne!(x, a.next_u64(), "two draws gave the same 64 bits");
    }

    #[test]
    fn seeded_entropy_is_reproducible_and_forks_are_independent() {
        let mut a = Entropy::seeded(3);
        let mut b = Entropy::seeded(3);
        assert_eq!(a.next_u64(), b.next_u64());
        let mut fa = a.fork();
        assert!(!fa.is_os());
        assert_ne!(fa.next_u64(), a.next_u64());
    }

    #[test]
    fn fill_from_alphabet_uses_only_the_alphabet_and_all_of_it() {
        let mut e = Entropy::seeded(5);
        let mut out = [0u8; 4096];
        e.fill_from_alphabet(&mut out, b"abc");
        assert!(out.iter().all(|c| b"abc".contains(c)));
        for c in b"abc" {
            let count = out.iter().filter(|x| *x == c).count();
            assert!((1200..1530).contains(&count), "{} appears {count} times of 4096", *c as char);
        }
    }

    #[test]
    fn same_seed_same_sequence_and_below_in_range() {
        let mut a = Rng::seeded(7);
        let mut b = Rng::seeded(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        for n in 1..50 {
            assert!(a.below(n) < n);
        }
        let mut v: Vec<u32> = (0..20).collect();
        a.shuffle(&mut v);
        let mut sorted = v.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..20).collect::<Vec<_>>());
        assert_ne!(v, sorted, "a 20-element shuffle that changes nothing is astronomically unlikely");
    }
}
