//! Magnet links: `magnet::Magnet::parse` on any string.
//!
//! Invariants: never a panic; a parsed link keeps its caps (at most `MAX_VALUES` trackers, peers and web seeds,
//! one tracker per tier, no empty or repeated tracker); the same text parses the same way twice.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::magnet::{is_magnet, Magnet, MAX_VALUES};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let parsed = Magnet::parse(&text);
    if let Ok(m) = &parsed {
        assert!(is_magnet(&text));
        assert!(m.trackers.len() <= MAX_VALUES && m.peers.len() <= MAX_VALUES && m.web_seeds.len() <= MAX_VALUES);
        for (i, tier) in m.trackers.iter().enumerate() {
            assert_eq!(tier.len(), 1);
            assert!(!tier[0].is_empty());
            assert!(m.trackers[..i].iter().all(|t| t[0] != tier[0]), "a repeated tracker");
        }
    }
    assert_eq!(parsed, Magnet::parse(&text));
});
