//! The receive side of one uTP connection: the in-order ring the owner reads, the out-of-order slots and
//! their reassembly, and the advertised window.
//!
//! Owns: nothing of its own (it is `impl Conn`); split from `mod.rs` by sub-concern.
//! Must not: send, or decide acknowledgement timing beyond flagging `ack_now` and the delayed-ACK timer.

use super::{seq_lt, Conn, Slot, Timer, ACK_EVERY, DELAYED_ACK, OOO_SLOTS};
use crate::time::Timestamp;

impl Conn {
    pub fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.recv_buf.is_empty() {
            return if self.eof_reached { Ok(0) } else { Err(std::io::ErrorKind::WouldBlock.into()) };
        }
        let n = out.len().min(self.recv_buf.len());
        let (a, b) = self.recv_buf.as_slices();
        let from_a = n.min(a.len());
        out[..from_a].copy_from_slice(&a[..from_a]);
        out[from_a..n].copy_from_slice(&b[..n - from_a]);
        self.recv_buf.drain(..n);
        // A window that had closed to under half opened: tell the peer now rather than at the next ACK.
        if (self.last_adv_wnd as usize) < self.recv_cap / 2 && self.recv_window() as usize >= self.recv_cap / 2 {
            self.ack_now = true;
        }
        Ok(n)
    }

    /// Bytes ready for `read`.
    pub fn readable_bytes(&self) -> usize {
        self.recv_buf.len()
    }

    pub(super) fn recv_window(&self) -> u32 {
        (self.recv_cap - self.recv_buf.len() - self.ooo_bytes) as u32
    }

    pub(super) fn on_data(&mut self, now: Timestamp, seq: u16, payload: &[u8], fin: bool) {
        if fin && self.eof_seq.is_none() {
            self.eof_seq = Some(seq);
        }
        if self.eof_seq.is_some_and(|eof| seq_lt(eof, seq)) {
            return; // past the FIN: ignored
        }
        let offset = usize::from(seq.wrapping_sub(self.ack_nr.wrapping_add(1)));
        if offset >= 0x8000 {
            // Already received: the ACK was lost; repeat it.
            self.ack_now = true;
            return;
        }
        // A closing owner reads nothing more: accept and discard, so the peer's FIN can complete.
        let len = if self.closing { 0 } else { payload.len() };
        if len > self.recv_window() as usize {
            self.ack_now = true; // no room: dropped; the ACK repeats our window
            return;
        }
        if offset == 0 {
            self.recv_buf.extend(&payload[..len]);
            self.ack_nr = seq;
            self.acks_owed += 1;
            if len > 0 {
                self.events.readable = true;
            }
            self.drain_ooo();
            if self.eof_seq == Some(self.ack_nr) && !self.eof_reached {
                self.eof_reached = true;
                self.events.readable = true;
                self.ack_now = true;
            }
            if self.acks_owed >= ACK_EVERY {
                self.ack_now = true;
            } else if self.timers[Timer::DelayedAck as usize].is_none() {
                self.set_timer(Timer::DelayedAck, Some(now + DELAYED_ACK));
            }
        } else if offset < OOO_SLOTS {
            if self.ooo.is_empty() {
                self.ooo.resize_with(OOO_SLOTS, Slot::default);
            }
            let slot = &mut self.ooo[usize::from(seq) % OOO_SLOTS];
            if !slot.used {
                slot.used = true;
                slot.seq = seq;
                slot.fin = fin;
                slot.data.clear();
                slot.data.extend_from_slice(&payload[..len]);
                self.ooo_count += 1;
                self.ooo_bytes += len;
            }
            // Out of order: a duplicate ACK with the SACK at once, for the sender's fast retransmit.
            self.ack_now = true;
        } else {
            self.ack_now = true; // beyond what we keep
        }
    }

    /// Moves packets that became in order from the slots to the receive ring.
    pub(super) fn drain_ooo(&mut self) {
        while self.ooo_count > 0 {
            let next = self.ack_nr.wrapping_add(1);
            let slot = &mut self.ooo[usize::from(next) % OOO_SLOTS];
            if !slot.used || slot.seq != next {
                break;
            }
            slot.used = false;
            self.recv_buf.extend(&slot.data);
            self.ooo_count -= 1;
            self.ooo_bytes -= slot.data.len();
            if !slot.data.is_empty() {
                self.events.readable = true;
            }
            if slot.fin {
                self.eof_seq.get_or_insert(next);
            }
            self.ack_nr = next;
            self.ack_now = true;
        }
    }
}
