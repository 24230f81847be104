//! A small bencode reader and writer for the tests: to read torrents the real tools made (info-hash from the raw
//! `info` span, names, sizes) and to build malformed ones. Independent of rill's own decoder on purpose.

use sha1::{Digest, Sha1};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Int(i64),
    Bytes(Vec<u8>),
    List(Vec<Value>),
    /// Keys in file order (the writer sorts nothing: tests may want a bad order).
    Dict(Vec<(Vec<u8>, Value)>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Bytes(s.as_bytes().to_vec())
    }

    pub fn int(i: i64) -> Value {
        Value::Int(i)
    }

    /// A dictionary from `(key, value)` pairs, in the given order.
    pub fn dict(pairs: Vec<(&str, Value)>) -> Value {
        Value::Dict(pairs.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Dict(d) => d.iter().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Value> {
        match self {
            Value::Dict(d) => d.iter_mut().find(|(k, _)| k == key.as_bytes()).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Inserts or replaces `key`.
    pub fn set(&mut self, key: &str, v: Value) {
        if let Some(slot) = self.get_mut(key) {
            *slot = v;
        } else if let Value::Dict(d) = self {
            d.push((key.as_bytes().to_vec(), v));
            d.sort_by(|a, b| a.0.cmp(&b.0));
        } else {
            panic!("set({key}) on a non-dictionary");
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        self.as_bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(l) => Some(l),
            _ => None,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Value::Int(i) => out.extend_from_slice(format!("i{i}e").as_bytes()),
            Value::Bytes(b) => {
                out.extend_from_slice(format!("{}:", b.len()).as_bytes());
                out.extend_from_slice(b);
            }
            Value::List(l) => {
                out.push(b'l');
                for v in l {
                    v.encode_into(out);
                }
                out.push(b'e');
            }
            Value::Dict(d) => {
                out.push(b'd');
                for (k, v) in d {
                    Value::Bytes(k.clone()).encode_into(out);
                    v.encode_into(out);
                }
                out.push(b'e');
            }
        }
    }
}

/// Decodes one value at the start of `buf`; returns it and the number of bytes it took.
pub fn decode_prefix(buf: &[u8]) -> Result<(Value, usize), String> {
    fn at(buf: &[u8], pos: usize, depth: usize) -> Result<(Value, usize), String> {
        if depth > 64 {
            return Err("nesting too deep".into());
        }
        match buf.get(pos) {
            None => Err(format!("unexpected end at {pos}")),
            Some(b'i') => {
                let end = pos + 1 + buf[pos + 1..].iter().position(|&c| c == b'e').ok_or("unterminated int")?;
                let s = std::str::from_utf8(&buf[pos + 1..end]).map_err(|e| e.to_string())?;
                Ok((Value::Int(s.parse().map_err(|e| format!("bad int {s:?}: {e}"))?), end + 1))
            }
            Some(b'l') => {
                let mut items = Vec::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (v, next) = at(buf, p, depth + 1)?;
                    items.push(v);
                    p = next;
                }
                Ok((Value::List(items), p + 1))
            }
            Some(b'd') => {
                let mut items = Vec::new();
                let mut p = pos + 1;
                while buf.get(p) != Some(&b'e') {
                    let (k, next) = at(buf, p, depth + 1)?;
                    let Value::Bytes(k) = k else {
                        return Err(format!("non-string key at {p}"));
                    };
                    let (v, next) = at(buf, next, depth + 1)?;
                    items.push((k, v));
                    p = next;
                }
                Ok((Value::Dict(items), p + 1))
            }
            Some(c) if c.is_ascii_digit() => {
                let colon = pos + buf[pos..].iter().position(|&c| c == b':').ok_or("string without ':'")?;
                let len: usize = std::str::from_utf8(&buf[pos..colon])
                    .map_err(|e| e.to_string())?
                    .parse()
                    .map_err(|e| format!("bad length: {e}"))?;
                let end = colon + 1 + len;
                if end > buf.len() {
                    return Err("string past the end".into());
                }
                Ok((Value::Bytes(buf[colon + 1..end].to_vec()), end))
            }
            Some(c) => Err(format!("unexpected byte {c:#04x} at {pos}")),
        }
    }
    at(buf, 0, 0)
}

pub fn decode(buf: &[u8]) -> Result<Value, String> {
    let (v, used) = decode_prefix(buf)?;
    if used != buf.len() {
        return Err(format!("{} trailing bytes", buf.len() - used));
    }
    Ok(v)
}

/// The byte range of the top-level `info` value, as it stands in the file.
pub fn info_span(torrent: &[u8]) -> Option<std::ops::Range<usize>> {
    if torrent.first() != Some(&b'd') {
        return None;
    }
    let mut p = 1;
    while torrent.get(p) != Some(&b'e') {
        let (k, next) = decode_prefix(&torrent[p..]).ok()?;
        let vstart = p + next;
        let (_, vlen) = decode_prefix(&torrent[vstart..]).ok()?;
        if k == Value::str("info") {
            return Some(vstart..vstart + vlen);
        }
        p = vstart + vlen;
    }
    None
}

/// SHA-1 of the raw `info` bytes: the v1 info-hash.
pub fn info_hash(torrent: &[u8]) -> [u8; 20] {
    let span = info_span(torrent).expect("torrent has no info dictionary");
    Sha1::digest(&torrent[span]).into()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Percent-encodes every byte that is not unreserved (for tracker query strings).
pub fn percent_encode(bytes: &[u8]) -> String {
    let mut s = String::new();
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}
