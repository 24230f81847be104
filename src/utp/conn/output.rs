//! The send side of one uTP connection: which packet goes next (retransmissions, new data within the
//! window, the FIN, a bare ACK) and its encoding, with our SACK bitmask, straight from the send ring into
//! the caller's buffer.
//!
//! Owns: nothing of its own (it is `impl Conn`); split from `mod.rs` by sub-concern.
//! Must not: allocate: every packet is written into the caller's buffer.

use super::{micros32, Conn, OutPacket, State, Timer, KEEPALIVE, MAX_OUTSTANDING, OOO_SLOTS, SACK_BYTES};
use crate::time::Timestamp;
use crate::utp::packet::{self, Header, PacketType};

impl Conn {
    // ------------------------------------------------------------------ output

    pub(super) fn push_outstanding(&mut self, kind: PacketType, len: usize) {
        let offset = self.send_base + (self.send_buf.len() - self.unsent) as u64;
        self.outstanding.push_back(OutPacket {
            seq: self.seq_nr,
            kind,
            offset,
            len: len as u16,
            sent_at: Timestamp::ZERO,
            transmissions: 0,
            sacked: false,
            in_flight: false,
            need_resend: true,
            fast_resent: false,
        });
        self.to_send += 1;
        self.unsent -= len;
        self.seq_nr = self.seq_nr.wrapping_add(1);
    }

    /// Whether `poll_packet` would produce a packet now.
    pub fn wants_transmit(&self) -> bool {
        if self.state == State::Dead {
            return false;
        }
        self.ack_now || self.to_send > 0 || (self.state == State::Connected && (self.unsent > 0 || self.wants_fin()))
    }

    pub(super) fn wants_fin(&self) -> bool {
        self.closing && self.unsent == 0 && self.fin_seq.is_none()
    }

    pub(super) fn fits(&self, len: usize) -> bool {
        self.in_flight == 0 || self.in_flight as usize + len <= self.window() as usize
    }

    /// Writes the next packet to send into `out` (at least the connection's datagram size); `None` when
    /// nothing is due.
    pub fn poll_packet(&mut self, now: Timestamp, out: &mut [u8]) -> Option<usize> {
        if self.state == State::Dead {
            return None;
        }
        // 1. Retransmissions, oldest first.
        let resend = if self.to_send > 0 { self.outstanding.iter().position(|o| o.need_resend) } else { None };
        if let Some(i) = resend {
            let len = usize::from(self.outstanding[i].len);
            if self.fits(len) || self.outstanding[i].kind == PacketType::Syn {
                return self.send_outstanding(now, i, out);
            }
        }
        if self.state == State::Connected {
            // 2. New data, as much as a packet holds, within the window (or one probe into a closed one).
            if self.unsent > 0 && self.outstanding.len() < MAX_OUTSTANDING {
                let len = self.unsent.min(self.max_payload);
                let room = self.fits(len) && (self.in_flight > 0 || self.peer_wnd as usize >= len || self.probe);
                if room {
                    self.probe = false;
                    self.push_outstanding(PacketType::Data, len);
                    return self.send_outstanding(now, self.outstanding.len() - 1, out);
                }
                if self.in_flight == 0 && self.timers[Timer::Retransmit as usize].is_none() {
                    self.set_timer(Timer::Retransmit, Some(now + self.rtt.rto()));
                }
            }
            // 3. FIN once everything queued is sent.
            if self.wants_fin() && self.outstanding.len() < MAX_OUTSTANDING {
                self.fin_seq = Some(self.seq_nr);
                self.push_outstanding(PacketType::Fin, 0);
                return self.send_outstanding(now, self.outstanding.len() - 1, out);
            }
        }
        // 4. A bare ACK (also the keep-alive and the answer to a SYN).
        if self.ack_now {
            let header = self.header(now, PacketType::State, self.seq_nr);
            return self.encode(now, &header, None, out);
        }
        None
    }

    pub(super) fn header(&mut self, now: Timestamp, kind: PacketType, seq_nr: u16) -> Header {
        let wnd = self.recv_window();
        self.last_adv_wnd = wnd;
        Header {
            kind,
            connection_id: if kind == PacketType::Syn { self.recv_id } else { self.send_id },
            timestamp_us: micros32(now),
            timestamp_difference_us: self.reply_micro,
            wnd_size: wnd,
            seq_nr,
            ack_nr: if kind == PacketType::Syn { 0 } else { self.ack_nr },
        }
    }

    pub(super) fn send_outstanding(&mut self, now: Timestamp, i: usize, out: &mut [u8]) -> Option<usize> {
        let o = self.outstanding[i];
        let header = self.header(now, o.kind, o.seq);
        let start = (o.offset - self.send_base) as usize;
        let n = self.encode(now, &header, Some((start, usize::from(o.len))), out)?;
        let o = &mut self.outstanding[i];
        if o.need_resend {
            o.need_resend = false;
            self.to_send -= 1;
        }
        o.sent_at = now;
        o.transmissions = o.transmissions.saturating_add(1);
        if !o.in_flight {
            o.in_flight = true;
            self.in_flight += u32::from(o.len);
        }
        if o.kind == PacketType::Syn {
            self.syn_sends += 1;
        }
        if self.timers[Timer::Retransmit as usize].is_none() {
            self.set_timer(Timer::Retransmit, Some(now + self.rtt.rto()));
        }
        Some(n)
    }

    /// Encodes `header`, our SACK when packets are out of order, and the payload `range` of the send
    /// ring; every packet carries the current ACK, so the delayed-ACK state is cleared.
    pub(super) fn encode(
        &mut self,
        now: Timestamp,
        header: &Header,
        range: Option<(usize, usize)>,
        out: &mut [u8],
    ) -> Option<usize> {
        let mut sack = [0u8; SACK_BYTES];
        let sack_len = if header.kind == PacketType::Syn { 0 } else { self.sack_mask(&mut sack) };
        let payload_len = range.map_or(0, |r| r.1);
        let total = packet::encoded_len(sack_len, payload_len);
        if out.len() < total {
            return None;
        }
        let n = packet::encode_into(header, &sack[..sack_len], &[], out)?;
        // The payload comes straight from the send ring (two slices when it wraps).
        if let Some((start, len)) = range {
            let (a, b) = self.send_buf.as_slices();
            let (a_from, a_to) = (start.min(a.len()), (start + len).min(a.len()));
            let done = a_to - a_from;
            out[n..n + done].copy_from_slice(&a[a_from..a_to]);
            let (b_from, b_to) = (start.saturating_sub(a.len()), (start + len).saturating_sub(a.len()));
            out[n + done..n + len].copy_from_slice(&b[b_from..b_to]);
        }
        self.ack_now = false;
        self.acks_owed = 0;
        self.set_timer(Timer::DelayedAck, None);
        self.last_send = now;
        self.set_timer(Timer::KeepAlive, Some(now + KEEPALIVE));
        Some(total)
    }

    /// Our SACK bitmask (bit `i` = `ack_nr + 2 + i` is held); returns its length, a multiple of 4, or 0.
    pub(super) fn sack_mask(&self, mask: &mut [u8; SACK_BYTES]) -> usize {
        if self.ooo_count == 0 {
            return 0;
        }
        let mut highest = None;
        for i in 0..OOO_SLOTS - 1 {
            let seq = self.ack_nr.wrapping_add(2).wrapping_add(i as u16);
            let slot = &self.ooo[usize::from(seq) % OOO_SLOTS];
            if slot.used && slot.seq == seq {
                mask[i / 8] |= 1 << (i % 8);
                highest = Some(i);
            }
        }
        highest.map_or(0, |i| (i / 8 + 1).div_ceil(4) * 4)
    }
}
