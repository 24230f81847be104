//! The host-name cache: which tracker names are resolved, being resolved, or failed lately.
//!
//! Owns: cache entries and their lifetimes, the order of a name's addresses, one lookup per name at a time.
//! Must not: resolve anything itself (the loop does, on a helper thread), or know about requests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::codec::{self, Host};
use super::{IoId, TrackerError};
use crate::time::{secs, Timestamp};

/// Resolved names are reused this long; a failed lookup is retried after `FAILURE_TTL`.
const RESOLVED_TTL: Duration = secs(60 * 60);
const FAILURE_TTL: Duration = secs(60);

#[derive(Debug)]
enum Entry {
    Pending { io: IoId },
    Resolved { ips: Vec<IpAddr>, until: Timestamp },
    Failed { error: String, until: Timestamp },
}

/// What a lookup gives right now.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Lookup {
    Ready(Vec<SocketAddr>),
    /// Another request asked already; wait for its answer.
    Pending,
    /// The loop must resolve `name`: the cache now waits for answer `io`.
    Ask {
        io: IoId,
        name: String,
    },
    Failed(TrackerError),
}

#[derive(Debug, Default)]
pub(super) struct HostCache {
    entries: HashMap<String, Entry>,
}

impl HostCache {
    /// An address literal needs no lookup; a name comes from the cache, or `new_io` names a new lookup.
    pub(super) fn lookup(&mut self, host: &Host, port: u16, now: Timestamp, new_io: impl FnOnce() -> IoId) -> Lookup {
        let name = match host {
            Host::Ip(ip) => return Lookup::Ready(vec![SocketAddr::new(*ip, port)]),
            Host::Name(name) => name,
        };
        match self.entries.get(name) {
            Some(Entry::Pending { .. }) => return Lookup::Pending,
            Some(Entry::Resolved { ips, until }) if *until > now => {
                return Lookup::Ready(ips.iter().map(|&ip| SocketAddr::new(ip, port)).collect());
            }
            Some(Entry::Failed { error, until }) if *until > now => {
                return Lookup::Failed(TrackerError::Resolve(error.clone()));
            }
            _ => {}
        }
        let io = new_io();
        self.entries.insert(name.clone(), Entry::Pending { io });
        Lookup::Ask { io, name: name.clone() }
    }

    /// Records the loop's answer to lookup `io`; returns the name it was for, `None` for a stale answer.
    pub(super) fn on_answer(
        &mut self,
        io: IoId,
        result: Result<Vec<SocketAddr>, String>,
        now: Timestamp,
    ) -> Option<String> {
        let name = self.entries.iter().find_map(|(name, entry)| match entry {
            Entry::Pending { io: pending } if *pending == io => Some(name.clone()),
            _ => None,
        })?;
        let entry = match result {
            Ok(addrs) if !addrs.is_empty() => {
                let mut ips: Vec<IpAddr> = Vec::new();
                for addr in addrs {
                    if !ips.contains(&addr.ip()) {
                        ips.push(addr.ip());
                    }
                }
                // IPv4 first: a v6 route is more often missing, and a silent UDP address costs 15 s.
                ips.sort_by_key(IpAddr::is_ipv6);
                Entry::Resolved { ips, until: now + RESOLVED_TTL }
            }
            Ok(_) => Entry::Failed { error: "no addresses".into(), until: now + FAILURE_TTL },
            Err(e) => Entry::Failed { error: codec::sanitize(e.as_bytes()), until: now + FAILURE_TTL },
        };
        self.entries.insert(name.clone(), entry);
        Some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_asked_once_cached_for_an_hour_and_failures_for_a_minute() {
        let mut cache = HostCache::default();
        let name = Host::Name("t.example".into());
        let t0 = Timestamp::ZERO;
        let ask = cache.lookup(&name, 80, t0, || IoId(1));
        assert_eq!(ask, Lookup::Ask { io: IoId(1), name: "t.example".into() });
        assert_eq!(cache.lookup(&name, 81, t0, || IoId(2)), Lookup::Pending);
        assert_eq!(cache.on_answer(IoId(9), Ok(vec![]), t0), None, "stale answers are ignored");
        let answer =
            vec!["[::1]:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap(), "127.0.0.1:80".parse().unwrap()];
        assert_eq!(cache.on_answer(IoId(1), Ok(answer), t0).as_deref(), Some("t.example"));
        let ready = Lookup::Ready(vec!["127.0.0.1:81".parse().unwrap(), "[::1]:81".parse().unwrap()]);
        assert_eq!(cache.lookup(&name, 81, t0 + secs(3599), || IoId(3)), ready);
        assert!(matches!(cache.lookup(&name, 81, t0 + secs(3600), || IoId(3)), Lookup::Ask { .. }));
        cache.on_answer(IoId(3), Err("no such host\n".into()), t0 + secs(3600));
        let failed = Lookup::Failed(TrackerError::Resolve("no such host".into()));
        assert_eq!(cache.lookup(&name, 81, t0 + secs(3659), || IoId(4)), failed);
        assert!(matches!(cache.lookup(&name, 81, t0 + secs(3660), || IoId(4)), Lookup::Ask { .. }));
        let literal = Host::Ip("::1".parse().unwrap());
        assert_eq!(cache.lookup(&literal, 5, t0, || IoId(5)), Lookup::Ready(vec!["[::1]:5".parse().unwrap()]));
    }
}
