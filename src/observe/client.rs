//! Which client a peer runs, from its 20-byte peer id: for display only, never trusted.
//!
//! Owns: the Azureus-style form (`-LT2080-…`: two letters, four version characters, between dashes), the
//! Shadow style (`S58B----…`: one letter, up to five version characters, dashes), aria2's `A2-1-36-0-…`, and
//! a short table of client codes. Anything else is "unknown".
//! Must not: print, or be used for decisions (a peer id is whatever the peer chose to send).
//!
//! <https://wiki.theory.org/BitTorrentSpecification#peer_id>

/// Azureus-style two-letter codes, the ones seen in real swarms today.
const AZUREUS_CODES: &[(&[u8; 2], &str)] = &[
    (b"AZ", "Vuze"),
    (b"BC", "BitComet"),
    (b"BI", "BiglyBT"),
    (b"BT", "BitTorrent"),
    (b"DE", "Deluge"),
    (b"FD", "Free Download Manager"),
    (b"KT", "KTorrent"),
    (b"LT", "libtorrent"),
    (b"lt", "libTorrent (rakshasa)"),
    (b"PI", "PicoTorrent"),
    (b"qB", "qBittorrent"),
    (b"RL", "rill"),
    (b"RQ", "rqbit"),
    (b"TL", "Tribler"),
    (b"TR", "Transmission"),
    (b"UT", "µTorrent"),
    (b"UM", "µTorrent Mac"),
    (b"UW", "µTorrent Web"),
    (b"WW", "WebTorrent"),
    (b"XL", "Xunlei"),
];

/// Shadow-style one-letter codes.
const SHADOW_CODES: &[(u8, &str)] =
    &[(b'A', "ABC"), (b'M', "Mainline"), (b'O', "Osprey"), (b'Q', "BTQueue"), (b'S', "Shadow"), (b'T', "BitTornado")];

/// A human name and version, e.g. `libtorrent 2.0.8.0`, `Transmission 3.00`, `aria2 1.36.0`.
pub fn client_name(peer_id: &[u8; 20]) -> String {
    azureus(peer_id).or_else(|| aria2(peer_id)).or_else(|| shadow(peer_id)).unwrap_or_else(|| "unknown".into())
}

/// `-XXVVVV-`.
fn azureus(id: &[u8; 20]) -> Option<String> {
    if id[0] != b'-' || id[7] != b'-' || !id[1..7].iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let code = [id[1], id[2]];
    let version = &id[3..7];
    let name = AZUREUS_CODES.iter().find(|(c, _)| **c == code).map(|(_, n)| *n);
    let Some(name) = name else {
        return Some(format!("{} {}", String::from_utf8_lossy(&code), dotted(version)));
    };
    let version = match &code {
        // Transmission: `3000` is 3.00, `400Z` a 4.0.0 beta; letters mark pre-releases.
        b"TR" => {
            let digits: String = version.iter().take_while(|b| b.is_ascii_digit()).map(|&b| b as char).collect();
            match digits.len() {
                4 => format!("{}.{}", &digits[..1], &digits[1..3]),
                _ => String::from_utf8_lossy(version).into_owned(),
            }
        }
        // qBittorrent and µTorrent: each character one number (`450A` → 4.5.0).
        b"qB" | b"UT" | b"UM" | b"UW" | b"BI" => dotted(&version[..3]),
        _ => dotted(version),
    };
    Some(format!("{name} {version}"))
}

/// Each character one version number; digits as themselves, letters A–Z as 10–35.
fn dotted(version: &[u8]) -> String {
    let parts: Vec<String> = version
        .iter()
        .map(|&b| match b {
            b'0'..=b'9' => (b - b'0').to_string(),
            b'A'..=b'Z' => (b - b'A' + 10).to_string(),
            b'a'..=b'z' => (b - b'a' + 36).to_string(),
            _ => "?".into(),
        })
        .collect();
    parts.join(".")
}

/// `A2-1-36-0-…`: aria2's own style.
fn aria2(id: &[u8; 20]) -> Option<String> {
    let text = std::str::from_utf8(id.get(..12)?).ok()?;
    let rest = text.strip_prefix("A2-")?;
    let mut numbers = rest.split('-').take(3);
    let (a, b, c) = (numbers.next()?, numbers.next()?, numbers.next()?);
    let ok = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (ok(a) && ok(b) && ok(c)).then(|| format!("aria2 {a}.{b}.{c}"))
}

/// `X` + up to five version characters, padded with `-`, then three more `-` (e.g. `S58B-----`).
fn shadow(id: &[u8; 20]) -> Option<String> {
    let name = SHADOW_CODES.iter().find(|(c, _)| *c == id[0]).map(|(_, n)| *n)?;
    let version = &id[1..6];
    if !id[6..9].iter().all(|&b| b == b'-') {
        return None;
    }
    let end = version.iter().position(|&b| b == b'-').unwrap_or(version.len());
    let version = &version[..end];
    if version.is_empty() || !version.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let parts: Vec<String> = version
        .iter()
        .map(|&b| match b {
            b'0'..=b'9' => (b - b'0').to_string(),
            b'A'..=b'Z' => (b - b'A' + 10).to_string(),
            _ => (b - b'a' + 36).to_string(),
        })
        .collect();
    Some(format!("{name} {}", parts.join(".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(prefix: &[u8]) -> [u8; 20] {
        let mut id = [b'x'; 20];
        id[..prefix.len()].copy_from_slice(prefix);
        id
    }

    #[test]
    fn real_clients_are_named() {
        assert_eq!(client_name(&id(b"-LT2080-")), "libtorrent 2.0.8.0");
        assert_eq!(client_name(&id(b"-TR3000-")), "Transmission 3.00");
        assert_eq!(client_name(&id(b"-TR4060-")), "Transmission 4.06");
        assert_eq!(client_name(&id(b"-qB4520-")), "qBittorrent 4.5.2");
        assert_eq!(client_name(&id(b"A2-1-36-0-")), "aria2 1.36.0");
        assert_eq!(client_name(&id(b"-RQ8000-")), "rqbit 8.0.0.0");
        assert_eq!(client_name(&id(b"-UT355W-")), "µTorrent 3.5.5");
        assert_eq!(client_name(&id(b"-RL0001-")), "rill 0.0.0.1");
        assert_eq!(client_name(&id(b"-DE13F0-")), "Deluge 1.3.15.0");
        assert_eq!(client_name(&id(b"S58B-----")), "Shadow 5.8.11");
        assert_eq!(client_name(&id(b"T03I-----")), "BitTornado 0.3.18");
    }

    #[test]
    fn unknown_codes_and_garbage_are_safe() {
        assert_eq!(client_name(&id(b"-ZZ1234-")), "ZZ 1.2.3.4");
        assert_eq!(client_name(&[0u8; 20]), "unknown");
        assert_eq!(client_name(&[0xff; 20]), "unknown");
        assert_eq!(client_name(&id(b"-LT\xff080-")), "unknown");
        assert_eq!(client_name(&id(b"A2-x-36-0-")), "unknown");
        assert_eq!(client_name(&id(b"M")), "unknown");
    }
}
