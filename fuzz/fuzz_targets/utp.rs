//! uTP (BEP 29): arbitrary datagrams into a `UtpMux` that holds two live connections (one it opened to A,
//! one it accepted from B), with the owner reading, writing and closing between them and time moving on.
//!
//! Input: records `[op][len][len bytes]`. `op & 3` picks the source (A, B, a stranger C, or A again);
//! `op & 4` stamps the datagram with the live connection's id for that source (so the fuzzer reaches the
//! connection states without guessing ids); `op & 8` advances time by `(op >> 4) * 40 ms` first; `op &
//! 0x80` after the datagram also writes to, reads from and (when `len` is odd) closes a connection.
//!
//! Invariants: never a panic; every datagram out fits the configured size and decodes; the mux never holds
//! more connections than its budget; its memory stays within the per-connection bound times the
//! connections held.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use rill::rng::Entropy;
use rill::time::{millis, Timestamp};
use rill::utp::packet::{self, Header, PacketType};
use rill::utp::{Config, UtpEvent, UtpId, UtpMux, MAX_DATAGRAM};

const A: ([u8; 4], u16) = ([10, 0, 0, 1], 6881);
const B: ([u8; 4], u16) = ([10, 0, 0, 2], 6881);
const C: ([u8; 4], u16) = ([10, 0, 0, 3], 6881);

fn drain(mux: &mut UtpMux, config: &Config, ids: &mut Vec<UtpId>) {
    let mut buf = [0u8; MAX_DATAGRAM];
    let mut n = 0;
    while let Some((_, len)) = mux.poll_transmit(&mut buf) {
        assert!(len <= config.max_datagram);
        assert!(packet::decode(&buf[..len]).is_ok());
        n += 1;
        assert!(n < 100_000, "poll_transmit never ends");
    }
    while let Some(e) = mux.poll_event() {
        match e {
            UtpEvent::Incoming(id, _) => ids.push(id),
            UtpEvent::Closed(id, _) => ids.retain(|&x| x != id),
            _ => {}
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let config = Config { max_connections: 8, max_half_open: 4, send_buffer: 64 * 1024, recv_buffer: 64 * 1024, ..Config::default() };
    let mut now = Timestamp::from_secs(1);
    let mut mux = UtpMux::new(now, config, Entropy::seeded(29));
    let mut ids = Vec::new();
    let mut buf = [0u8; MAX_DATAGRAM];

    // A connection we open to A, answered by a STATE from A.
    let to_a = mux.connect(now, SocketAddr::from(A)).unwrap();
    ids.push(to_a);
    let (_, n) = mux.poll_transmit(&mut buf).unwrap();
    let syn = packet::decode(&buf[..n]).unwrap().header;
    let a_send_id = syn.connection_id.wrapping_add(1);
    let a_recv_id = syn.connection_id;
    let answer = Header {
        kind: PacketType::State,
        connection_id: a_recv_id,
        timestamp_us: 1,
        timestamp_difference_us: 0,
        wnd_size: 1 << 20,
        seq_nr: 1000,
        ack_nr: syn.seq_nr,
    };
    let mut dgram = [0u8; 20];
    packet::encode_into(&answer, &[], &[], &mut dgram).unwrap();
    mux.handle_datagram(now, SocketAddr::from(A), &dgram);
    // A connection B opens to us.
    let b_syn = Header { kind: PacketType::Syn, connection_id: 500, seq_nr: 77, ack_nr: 0, ..answer };
    packet::encode_into(&b_syn, &[], &[], &mut dgram).unwrap();
    mux.handle_datagram(now, SocketAddr::from(B), &dgram);
    drain(&mut mux, &config, &mut ids);
    let _ = mux.write(to_a, &[0x5a; 10_000]);
    drain(&mut mux, &config, &mut ids);

    let mut rest = data;
    let mut scratch = [0u8; 4096];
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]).min(rest.len() - 2));
        let mut datagram = rest[2..2 + len].to_vec();
        rest = &rest[2 + len..];
        if op & 8 != 0 {
            now = now + millis(40 * u64::from(op >> 4));
            mux.handle_timeout(now);
        }
        let (from, id) = match op & 3 {
            0 | 3 => (A, a_recv_id),
            1 => (B, 501),
            _ => (C, 0),
        };
        if op & 4 != 0 && datagram.len() >= 4 {
            datagram[2..4].copy_from_slice(&id.to_be_bytes());
        }
        let _ = a_send_id;
        mux.handle_datagram(now, SocketAddr::from(from), &datagram);
        drain(&mut mux, &config, &mut ids);
        if op & 0x80 != 0 {
            if let Some(&id) = ids.get(len % ids.len().max(1)) {
                let _ = mux.write(id, &datagram);
                while let Ok(n) = mux.read(id, &mut scratch) {
                    if n == 0 {
                        break;
                    }
                }
                if len % 2 == 1 {
                    mux.close(id);
                    ids.retain(|&x| x != id);
                }
            }
            drain(&mut mux, &config, &mut ids);
        }
        assert!(mux.connection_count() <= config.max_connections);
        assert!(mux.memory_bytes() <= (mux.connection_count() + 2) * mux.connection_memory_bound());
    }
});
