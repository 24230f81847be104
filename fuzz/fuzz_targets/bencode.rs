//! `rill::bencode` (the span scanner behind the info-hash and every tracker body) and
//! `rill::tracker::codec::Value` (typed reads inside a checked span), against a small strict reference
//! decoder written here from BEP 3.
//!
//! Invariants: never a panic; the scanner accepts exactly what the reference accepts and ends where it ends;
//! a span lies inside the input; `decode(encode(x)) == x` for every accepted value; the typed reads see the
//! same tree as the reference; `dict_value_span` finds every key (or reports a duplicate).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rill::bencode::{self, BencodeError, DictEntries, MAX_DEPTH};
use rill::tracker::codec::Value;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Node {
    Int(i64),
    Str(Vec<u8>),
    List(Vec<Node>),
    Dict(Vec<(Vec<u8>, Node)>),
}

/// The reference: recursive, strict, and independent of the scanner. `open` is how many containers are open.
fn parse(input: &[u8], pos: usize, open: usize) -> Option<(Node, usize)> {
    match *input.get(pos)? {
        b'i' => {
            let end = pos + 1 + input[pos + 1..].iter().position(|&b| b == b'e')?;
            let body = &input[pos + 1..end];
            let digits = body.strip_prefix(b"-").unwrap_or(body);
            let ok = !digits.is_empty()
                && digits.iter().all(u8::is_ascii_digit)
                && !(digits.len() > 1 && digits[0] == b'0')
                && body != b"-0";
            if !ok {
                return None;
            }
            let n: i64 = std::str::from_utf8(body).ok()?.parse().ok()?;
            Some((Node::Int(n), end + 1))
        }
        b'0'..=b'9' => {
            let (bytes, end) = parse_str(input, pos)?;
            Some((Node::Str(bytes), end))
        }
        b'l' | b'd' if open < MAX_DEPTH => {
            let is_dict = input[pos] == b'd';
            let mut at = pos + 1;
            let mut items = Vec::new();
            let mut entries = Vec::new();
            loop {
                if *input.get(at)? == b'e' {
                    let node = if is_dict { Node::Dict(entries) } else { Node::List(items) };
                    return Some((node, at + 1));
                }
                if is_dict {
                    if !input[at].is_ascii_digit() {
                        return None;
                    }
                    let (key, after_key) = parse_str(input, at)?;
                    let (value, end) = parse(input, after_key, open + 1)?;
                    entries.push((key, value));
                    at = end;
                } else {
                    let (value, end) = parse(input, at, open + 1)?;
                    items.push(value);
                    at = end;
                }
            }
        }
        _ => None,
    }
}

/// `<decimal length>:<bytes>`; leading zeros in the length are tolerated (as the scanner does).
fn parse_str(input: &[u8], pos: usize) -> Option<(Vec<u8>, usize)> {
    let colon = pos + input[pos..].iter().position(|&b| b == b':')?;
    let digits = &input[pos..colon];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let len: usize = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let end = (colon + 1).checked_add(len)?;
    Some((input.get(colon + 1..end)?.to_vec(), end))
}

/// Canonical encoding (shortest length prefixes, keys in the order given).
fn encode(node: &Node, out: &mut Vec<u8>) {
    match node {
        Node::Int(n) => out.extend_from_slice(format!("i{n}e").as_bytes()),
        Node::Str(s) => {
            out.extend_from_slice(format!("{}:", s.len()).as_bytes());
            out.extend_from_slice(s);
        }
        Node::List(items) => {
            out.push(b'l');
            items.iter().for_each(|item| encode(item, out));
            out.push(b'e');
        }
        Node::Dict(entries) => {
            out.push(b'd');
            for (key, value) in entries {
                encode(&Node::Str(key.clone()), out);
                encode(value, out);
            }
            out.push(b'e');
        }
    }
}

/// The typed reader sees the same tree as the reference.
fn same_tree(value: &Value<'_>, node: &Node) {
    match node {
        Node::Int(n) => assert_eq!(value.as_int(), Some(*n)),
        Node::Str(s) => assert_eq!(value.as_bytes(), Some(&s[..])),
        Node::List(items) => {
            assert!(!value.is_dict());
            assert_eq!(value.as_int(), None);
            let got: Vec<Value<'_>> = value.items().collect();
            assert_eq!(got.len(), items.len(), "list length");
            for (v, n) in got.iter().zip(items) {
                same_tree(v, n);
            }
        }
        Node::Dict(entries) => {
            assert!(value.is_dict());
            let got: Vec<(&[u8], Value<'_>)> = value.entries().collect();
            assert_eq!(got.len(), entries.len(), "dictionary length");
            for ((k, v), (key, n)) in got.iter().zip(entries) {
                assert_eq!(*k, &key[..]);
                same_tree(v, n);
            }
            // `get` takes the first of duplicate keys.
            if let Some((key, first)) = entries.first() {
                same_tree(&value.get(key).expect("get finds a present key"), first);
            }
        }
    }
}

fn check_dict(input: &[u8], start: usize, entries: &[(Vec<u8>, Node)]) {
    // Entries come in order, each inside the input, each after the previous.
    let mut last_end = start + 1;
    let mut n = 0;
    for entry in DictEntries::new(input, start).expect("a dictionary") {
        let entry = entry.expect("entries of a checked dictionary");
        assert!(entry.key.start >= last_end && entry.key.end <= entry.value.start);
        assert!(entry.value.end <= input.len());
        assert_eq!(&input[entry.key.clone()], &entries[n].0[..]);
        let (node, end) = parse(input, entry.value.start, 0).expect("the entry's value parses");
        assert_eq!(end, entry.value.end);
        assert_eq!(node, entries[n].1);
        last_end = entry.value.end;
        n += 1;
    }
    assert_eq!(n, entries.len());
    for (key, node) in entries {
        let count = entries.iter().filter(|(k, _)| k == key).count();
        match bencode::dict_value_span(&input[start..], key) {
            Ok(Some(span)) => {
                assert_eq!(count, 1);
                let (found, end) = parse(&input[start..], span.start, 0).expect("value parses");
                assert_eq!(end, span.end);
                assert_eq!(&found, node);
            }
            Err(BencodeError::DuplicateKey { .. }) => assert!(count > 1),
            other => panic!("dict_value_span({key:?}) = {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let scanned = bencode::value_span(data, 0);
    let reference = parse(data, 0, 0);
    match (&scanned, &reference) {
        (Ok(span), Some((node, end))) => {
            assert_eq!(span.start, 0);
            assert_eq!(span.end, *end, "scanner and reference end apart");
            assert!(span.end <= data.len());
            assert_eq!(bencode::whole_value_span(data).is_ok(), span.end == data.len());
            // decode(encode(x)) == x, and the canonical form scans whole.
            let mut canonical = Vec::new();
            encode(node, &mut canonical);
            assert_eq!(bencode::whole_value_span(&canonical), Ok(0..canonical.len()));
            assert_eq!(parse(&canonical, 0, 0), Some((node.clone(), canonical.len())));
            // The bytes after the value never change the value.
            let prefix = &data[..span.end];
            assert_eq!(bencode::whole_value_span(prefix), Ok(0..span.end));
            let value = Value::parse(data).expect("the scanner accepted it");
            same_tree(&value, node);
            if let Node::Dict(entries) = node {
                check_dict(data, 0, entries);
            }
        }
        (Err(_), None) => {
            assert!(bencode::whole_value_span(data).is_err());
            assert!(Value::parse(data).is_err());
        }
        _ => panic!("scanner {scanned:?} vs reference {:?}", reference.map(|r| r.1)),
    }
    if let Err(e) = scanned {
        assert!(!e.to_string().contains('\n'));
    }
});
