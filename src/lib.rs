//! rill: a low-footprint BitTorrent client on one single-threaded mio readiness loop.
//!
//! The protocol logic is sans-I/O: codecs and per-peer / per-tracker state machines take bytes and `now` and
//! return actions. Only `event_loop` touches sockets and the clock; only `storage` touches data files.
//! See README.md, "Architecture", for the map.

#![forbid(unsafe_code)]
#![deny(unused_must_use)]

pub mod bencode;
pub mod bitfield;
pub mod cli;
pub mod daemon;
pub mod dht;
pub mod engine;
pub mod event_loop;
pub mod geometry;
pub mod http;
pub mod magnet;
pub mod metadata;
pub mod metainfo;
pub mod observe;
pub mod peer;
pub mod rng;
pub mod rpc;
#[cfg(test)]
pub mod sim;
pub mod storage;
pub mod swarm;
pub mod time;
pub mod timer_wheel;
pub mod torrent;
pub mod tracker;
pub mod utp;
pub mod verdict;
pub mod wire;
