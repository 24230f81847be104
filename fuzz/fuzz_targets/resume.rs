//! The resume file: `storage::resume::decode` on whatever lies on disk.
//!
//! Input: the expected shape (2 bytes: bitfield bytes, file count), then the file's bytes; the info-hash
//! expected is the unit tests' `[9; 20]`.
//!
//! Invariants: never a panic; an accepted file has exactly the expected shape and info-hash, and
//! `decode(encode(x)) == x`; errors are one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::storage::resume::{decode, encode};

const INFO_HASH: [u8; 20] = [9; 20];

fuzz_target!(|data: &[u8]| {
    let Some((shape, bytes)) = data.split_first_chunk::<2>() else { return };
    let (piece_bytes, file_count) = (usize::from(shape[0]), usize::from(shape[1]));
    match decode(bytes, &INFO_HASH, piece_bytes, file_count) {
        Ok(resume) => {
            assert_eq!(resume.info_hash, INFO_HASH);
            assert_eq!(resume.pieces.len(), piece_bytes);
            assert_eq!(resume.files.len(), file_count);
            let again = encode(&resume);
            assert_eq!(decode(&again, &INFO_HASH, piece_bytes, file_count), Ok(resume));
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
});
