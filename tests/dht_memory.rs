//! What the DHT's bounded structures cost on the heap at their largest, measured (issue 12: "say what the
//! table costs at its largest"): a counting allocator wrapped around the system one records the bytes live
//! on this thread before and after each structure is built, and the figures are checked against the bounds
//! the `dht::Config` doc states.
//!
//! Measured: an IPv4 routing table fed random node ids (as deep as that makes it) and one forced to its
//! deepest (ids chosen to split all 160 buckets); a full peer store at the `Config` defaults (500
//! info-hashes × 50 peers); a full rate-limit table (4,096 sources); a whole `Dht` at start. Run with
//! `cargo test --test dht_memory -- --nocapture` to see the figures.
//!
//! The only unsafe code in the repository's tests: `GlobalAlloc` is an unsafe trait, and this one forwards
//! every call to `System` unchanged, only counting.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};

use rill::dht::limit::{LimitConfig, RateLimit};
use rill::dht::lookup::{Lookup, LookupKind, MAX_CANDIDATES};
use rill::dht::node_id::NodeId;
use rill::dht::routing::{RoutingTable, Seen, K, REPLACEMENTS};
use rill::dht::store::PeerStore;
use rill::dht::{Config, Dht};
use rill::rng::{Entropy, Rng};
use rill::time::Timestamp;

struct Counting;

thread_local! {
    /// Bytes allocated minus bytes freed by this thread (per thread, so tests running beside each other
    /// do not mix their counts).
    static LIVE: Cell<i64> = const { Cell::new(0) };
}

fn count(delta: i64) {
    let _ = LIVE.try_with(|l| l.set(l.get() + delta));
}

// SAFETY: every method forwards to `System` with the caller's arguments, which meet `System`'s contract
// because they meet ours; the counting touches no memory the allocator hands out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            count(layout.size() as i64);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        count(-(layout.size() as i64));
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            count(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn live() -> i64 {
    LIVE.with(Cell::get)
}

/// The heap bytes `make` leaves behind in what it returns (everything else it allocated is freed by then).
fn heap_of<T>(make: impl FnOnce() -> T) -> (T, usize) {
    let before = live();
    let value = make();
    let bytes = live() - before;
    assert!(bytes >= 0);
    (value, bytes as usize)
}

fn addr(i: u32) -> SocketAddr {
    SocketAddr::from(((0x0b00_0000 + i).to_be_bytes(), 6881))
}

fn random_id(rng: &mut Rng) -> NodeId {
    let mut id = [0u8; 20];
    rng.fill(&mut id);
    NodeId(id)
}

const KB: usize = 1000;

#[test]
fn routing_table_store_and_rate_limit_at_their_largest() {
    let t = Timestamp::from_secs(1);
    let mut rng = Rng::seeded(0xd47);
    let own = random_id(&mut rng);

    // A table hearing from random nodes: the depth grows by one bucket per doubling of what it hears.
    let mut fed = 0u32;
    for target in [10_000u32, 100_000, 1_000_000] {
        let (table, bytes) = heap_of(|| {
            let mut table = RoutingTable::new(own, true, t);
            while fed < target {
                table.heard_from(t, random_id(&mut rng), addr(fed), Seen::Responded);
                fed += 1;
            }
            table
        });
        println!(
            "routing table, {target} random nodes heard: {} buckets, {} nodes, {} waiting: {bytes} bytes",
            table.bucket_count(),
            table.len(),
            table.replacement_count()
        );
        assert!(table.bucket_count() < 30 && bytes < 30 * 2 * KB, "{bytes} bytes");
        fed = 0;
    }

    // Forced to its deepest: 20 nodes at every depth, so every bucket that can exist does, full, with full caches.
    let (table, bytes) = heap_of(|| {
        let mut table = RoutingTable::new(own, true, t);
        let mut i = 0;
        for depth in 0..160 {
            for _ in 0..K + REPLACEMENTS + 4 {
                i += 1;
                let id = own.random_at_depth(depth, &mut |o| rng.fill(o));
                table.heard_from(t, id, addr(i), Seen::Responded);
            }
        }
        table
    });
    println!(
        "routing table at its deepest: {} buckets, {} nodes, {} waiting: {bytes} bytes (bound {})",
        table.bucket_count(),
        table.len(),
        table.replacement_count(),
        RoutingTable::MAX_BYTES
    );
    // Not quite 160: the last bucket can hold only the 7 ids that share 157 or more bits with ours.
    assert!(table.bucket_count() >= 157, "{} buckets", table.bucket_count());
    assert!(bytes <= RoutingTable::MAX_BYTES, "{bytes} > {}", RoutingTable::MAX_BYTES);
    drop(table);

    // The peer store full at the defaults: 500 info-hashes × 50 peers.
    let config = Config::default();
    let (store, bytes) = heap_of(|| {
        let mut store = PeerStore::new(config.store_hashes, config.store_peers_per_hash);
        for h in 0..config.store_hashes {
            let mut id = [0u8; 20];
            id[..8].copy_from_slice(&(h as u64).to_be_bytes());
            for p in 0..config.store_peers_per_hash {
                store.announce(t, NodeId(id), SocketAddr::from(([10, 1, (p >> 8) as u8, p as u8], 6881)));
            }
        }
        store
    });
    println!(
        "peer store, {} info-hashes x {} peers: {bytes} bytes ({} per peer)",
        store.hashes(),
        store.most_peers(),
        bytes / store.peer_count()
    );
    assert_eq!(store.peer_count(), config.store_hashes * config.store_peers_per_hash);
    assert!(bytes <= 1_100 * KB, "{bytes} bytes");
    drop(store);

    // The rate-limit table: it grows with the sources seen, up to its bound, and no further.
    let limit = LimitConfig::default();
    let (mut table, at_start) = heap_of(|| RateLimit::new(limit));
    let before = live();
    for i in 0..limit.max_sources as u32 {
        table.allow(t, IpAddr::from((0x0c00_0000 + i).to_be_bytes()));
    }
    let full = (live() - before) as usize;
    for i in 0..limit.max_sources as u32 * 4 {
        table.allow(t, IpAddr::from((0x0d00_0000 + i).to_be_bytes()));
    }
    let flooded = (live() - before) as usize;
    println!(
        "rate-limit table: {at_start} bytes at start, {full} with {} sources, {flooded} after 4x as many more",
        table.tracked()
    );
    assert_eq!(table.tracked(), limit.max_sources);
    assert_eq!(flooded, full, "it never grows past its bound");
    assert!(at_start + full <= 210 * KB, "{full} bytes");
    drop(table);

    // One lookup at its largest: a full candidate list, and the most peers it remembers to de-duplicate.
    let (lookup, bytes) = heap_of(|| {
        let mut lookup = Lookup::new(own, LookupKind::GetPeers);
        for i in 0..MAX_CANDIDATES as u32 * 2 {
            lookup.add_candidate(Some(random_id(&mut rng)), addr(i));
        }
        let mut port = 0u16;
        while let Some((id, from)) = lookup.poll_query(t) {
            let peers: Vec<SocketAddr> = (0..100)
                .map(|_| {
                    port += 1;
                    SocketAddr::from(([10, 2, 0, 1], port))
                })
                .collect();
            let nodes: Vec<(NodeId, SocketAddr)> = (0..8).map(|i| (random_id(&mut rng), addr(5000 + i))).collect();
            lookup.on_response(from, id.unwrap_or_default(), Some(b"token"), nodes.into_iter(), peers.into_iter());
            while lookup.poll_peer().is_some() {}
        }
        lookup
    });
    println!("one lookup, {} candidates, peers remembered: {bytes} bytes", lookup.candidate_count());
    assert_eq!(lookup.candidate_count(), MAX_CANDIDATES);
    assert!(bytes <= 80 * KB, "{bytes} bytes");
    drop(lookup);

    // A whole machine at start.
    let (d, bytes) = heap_of(|| Dht::new(t, config, None, Entropy::seeded(1), Rng::seeded(1)));
    println!("Dht at start: {bytes} bytes");
    assert!(bytes <= 10 * KB, "{bytes} bytes");
    // Every pending slot taken (pings to 300 addresses: 256 go out) and the send queue full.
    let mut d = d;
    let before = live();
    for i in 0..300 {
        d.ping(t, addr(20_000 + i));
    }
    let busy = (live() - before) as usize;
    let f = d.footprint();
    println!("Dht with {} queries pending and {} datagrams queued: {busy} bytes more", f.pending, f.transmit);
    assert_eq!((f.pending, f.transmit), (config.max_pending, config.max_transmit));
    assert!(busy <= 100 * KB, "{busy} bytes");
    drop(d);
}
