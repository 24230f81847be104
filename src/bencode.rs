//! A minimal bencode scanner: finds the byte span of a value without decoding it.
//!
//! Owns: span scanning (used for the raw `info` span behind the info-hash), bounded in depth and length.
//! Must not: allocate per value or trust lengths in the input.
