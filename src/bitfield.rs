//! A fixed-length bit set over piece indexes, in BitTorrent wire order (bit 7 of byte 0 is piece 0).
//!
//! Owns: bit storage, counting, and the checked conversion from a peer's `bitfield` payload.
//! Must not: know about framing or peers.

/// Why a peer's bitfield payload is unacceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BitfieldError {
    WrongLength { got: u32, want: u32 },
    SpareBits,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bitfield {
    bytes: Vec<u8>,
    len: u32,
    ones: u32,
}

impl Bitfield {
    pub fn new(len: u32) -> Self {
        Bitfield { bytes: vec![0; Self::byte_len(len)], len, ones: 0 }
    }

    pub fn full(len: u32) -> Self {
        let mut b = Bitfield::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    /// Bytes on the wire for `len` bits.
    pub fn byte_len(len: u32) -> usize {
        (len as usize).div_ceil(8)
    }

    /// A peer's payload: exactly ⌈len/8⌉ bytes with the spare bits zero (BEP 3).
    pub fn from_wire(payload: &[u8], len: u32) -> Result<Self, BitfieldError> {
        let want = Self::byte_len(len);
        if payload.len() != want {
            return Err(BitfieldError::WrongLength { got: payload.len() as u32, want: want as u32 });
        }
        let spare = (want * 8) as u32 - len;
        if spare > 0 && payload[want - 1] & ((1u8 << spare) - 1) != 0 {
            return Err(BitfieldError::SpareBits);
        }
        let ones = payload.iter().map(|b| b.count_ones()).sum();
        Ok(Bitfield { bytes: payload.to_vec(), len, ones })
    }

    /// Replaces the contents with a peer's payload (same checks as `from_wire`), reusing the storage.
    pub fn assign_from_wire(&mut self, payload: &[u8]) -> Result<(), BitfieldError> {
        let parsed = Self::from_wire(payload, self.len)?;
        self.bytes.copy_from_slice(&parsed.bytes);
        self.ones = parsed.ones;
        Ok(())
    }

    pub fn len(&self) -> u32 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn count_ones(&self) -> u32 {
        self.ones
    }
    pub fn is_full(&self) -> bool {
        self.ones == self.len
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Out-of-range indexes read as unset.
    pub fn get(&self, i: u32) -> bool {
        i < self.len && self.bytes[(i / 8) as usize] & (0x80 >> (i % 8)) != 0
    }

    /// Returns whether the bit was newly set. Out-of-range indexes are ignored.
    pub fn set(&mut self, i: u32) -> bool {
        if i >= self.len || self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] |= 0x80 >> (i % 8);
        self.ones += 1;
        true
    }

    /// Returns whether the bit was set before.
    pub fn clear(&mut self, i: u32) -> bool {
        if !self.get(i) {
            return false;
        }
        self.bytes[(i / 8) as usize] &= !(0x80 >> (i % 8));
        self.ones -= 1;
        true
    }

    pub fn iter_ones(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len).filter(move |&i| self.get(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_order_and_counting() {
        let mut b = Bitfield::new(10);
        assert!(b.set(0));
        assert!(!b.set(0));
        assert!(b.set(9));
        assert_eq!(b.as_bytes(), &[0x80, 0x40]);
        assert_eq!(b.count_ones(), 2);
        assert!(b.clear(0));
        assert_eq!(b.iter_ones().collect::<Vec<_>>(), vec![9]);
        assert!(!b.get(10));
        assert!(!b.set(10));
    }

    #[test]
    fn from_wire_rejects_wrong_length_and_spare_bits() {
        assert_eq!(Bitfield::from_wire(&[0xff], 10), Err(BitfieldError::WrongLength { got: 1, want: 2 }));
        assert_eq!(Bitfield::from_wire(&[0xff, 0xe0], 10), Err(BitfieldError::SpareBits));
        let b = Bitfield::from_wire(&[0xff, 0xc0], 10).unwrap();
        assert!(b.is_full());
        assert!(Bitfield::full(10).is_full());
    }
}
