//! A minimal bencode scanner: finds the byte span of a value without decoding it.
//!
//! Owns: span scanning (used for the raw `info` span behind the info-hash), bounded in depth and length.
//! Must not: allocate per value or trust lengths in the input.
//!
//! The scanner is iterative: one `u64` records, per open container, whether it is a dictionary, so nesting
//! is bounded by [`MAX_DEPTH`] without recursion and without a heap stack. Every length prefix and integer is
//! parsed with checked arithmetic, and every index is checked against the input, so no input can make it
//! panic or loop: each step consumes at least one byte.
//!
//! Strictness (BEP 3, <https://www.bittorrent.org/beps/bep_0003.html>, "bencoding"): integers may not have
//! leading zeros, `-0` or an empty body, and must fit an `i64` (the width serde_bencode decodes into);
//! dictionary keys must be byte strings. Key order is not checked: real torrents with unsorted keys exist and
//! the info-hash is taken from the bytes as they stand, so order cannot change it. String length prefixes
//! with leading zeros are tolerated for the same reason; their value is still checked against the input.
//!
//! Trailing bytes after a top-level value are the caller's decision: [`value_span`] reports where the value
//! ends and [`whole_value_span`] rejects anything after it. (`.torrent` parsing tolerates them, as
//! libtorrent 2.0 and Transmission 3.00 do; see `metainfo`.)

use std::fmt;
use std::ops::Range;

/// Deepest nesting of lists and dictionaries accepted. Real torrents nest four levels (`info` → `files` →
/// file → `path`); v2 `file tree`s nest one level per directory, so this leaves room for deep folder trees.
pub const MAX_DEPTH: usize = 64;

// The open-container record is one bit per level in a `u64`.
const _: () = assert!(MAX_DEPTH <= u64::BITS as usize);

/// Why a byte string is not (the expected kind of) bencode. Offsets are from the start of the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BencodeError {
    /// The input ended inside a value (or before one started).
    UnexpectedEnd { at: usize },
    /// A byte that cannot start a value here.
    UnexpectedByte { at: usize, byte: u8 },
    /// An integer with no digits, a leading zero, `-0`, a stray sign or a value outside `i64`.
    BadInteger { at: usize },
    /// A string length prefix that is not a decimal number or does not fit in memory.
    BadLength { at: usize },
    /// A string whose length prefix runs past the end of the input.
    StringPastEnd { at: usize, len: usize },
    /// Lists and dictionaries nested deeper than [`MAX_DEPTH`].
    TooDeep { at: usize },
    /// A dictionary key that is not a byte string.
    KeyNotString { at: usize },
    /// A dictionary whose last key has no value.
    MissingValue { at: usize },
    /// Bytes after the top-level value.
    TrailingBytes { at: usize },
    /// A value that had to be a dictionary.
    NotADictionary { at: usize },
    /// The same key twice in a dictionary searched with [`dict_value_span`].
    DuplicateKey { at: usize },
}

impl fmt::Display for BencodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BencodeError::UnexpectedEnd { at } => {
                write!(f, "unexpected end of input at byte {at}")
            }
            BencodeError::UnexpectedByte { at, byte } => {
                write!(f, "unexpected byte 0x{byte:02x} at byte {at}")
            }
            BencodeError::BadInteger { at } => write!(f, "malformed integer at byte {at}"),
            BencodeError::BadLength { at } => write!(f, "malformed string length at byte {at}"),
            BencodeError::StringPastEnd { at, len } => {
                write!(f, "string of {len} bytes at byte {at} runs past the end of the input")
            }
            BencodeError::TooDeep { at } => {
                write!(f, "nesting deeper than {MAX_DEPTH} levels at byte {at}")
            }
            BencodeError::KeyNotString { at } => {
                write!(f, "dictionary key at byte {at} is not a string")
            }
            BencodeError::MissingValue { at } => {
                write!(f, "dictionary key without a value before byte {at}")
            }
            BencodeError::TrailingBytes { at } => {
                write!(f, "trailing bytes after the value at byte {at}")
            }
            BencodeError::NotADictionary { at } => {
                write!(f, "value at byte {at} is not a dictionary")
            }
            BencodeError::DuplicateKey { at } => write!(f, "duplicate dictionary key at byte {at}"),
        }
    }
}

impl std::error::Error for BencodeError {}

/// The span of the complete value that starts at `input[start]`, from its first byte to one past its last.
///
/// Every nested value is checked; the bytes after the value are not looked at.
pub fn value_span(input: &[u8], start: usize) -> Result<Range<usize>, BencodeError> {
    // Bit `d` of `dict_levels` is set when the container open at depth `d + 1` is a dictionary.
    let mut dict_levels: u64 = 0;
    let mut depth: usize = 0;
    // Inside a dictionary: the next item is a key (true) or that key's value (false).
    let mut expect_key = false;
    let mut pos = start;
    loop {
        let byte = *input.get(pos).ok_or(BencodeError::UnexpectedEnd { at: pos })?;
        let in_dict = depth > 0 && dict_levels & (1 << (depth - 1)) != 0;
        if depth > 0 && byte == b'e' {
            if in_dict && !expect_key {
                return Err(BencodeError::MissingValue { at: pos });
            }
            depth -= 1;
            dict_levels &= !(1 << depth);
            pos += 1;
            if depth == 0 {
                return Ok(start..pos);
            }
            // The closed container was a value in its parent.
            expect_key = dict_levels & (1 << (depth - 1)) != 0;
            continue;
        }
        if in_dict && expect_key {
            if !byte.is_ascii_digit() {
                return Err(BencodeError::KeyNotString { at: pos });
            }
            pos = string_span(input, pos)?.end;
            expect_key = false;
            continue;
        }
        match byte {
            b'i' => pos = integer_end(input, pos)?,
            b'0'..=b'9' => pos = string_span(input, pos)?.end,
            b'l' | b'd' => {
                if depth == MAX_DEPTH {
                    return Err(BencodeError::TooDeep { at: pos });
                }
                if byte == b'd' {
                    dict_levels |= 1 << depth;
                }
                depth += 1;
                expect_key = byte == b'd';
                pos += 1;
                continue;
            }
            _ => return Err(BencodeError::UnexpectedByte { at: pos, byte }),
        }
        // A scalar value is complete.
        if depth == 0 {
            return Ok(start..pos);
        }
        expect_key = in_dict;
    }
}

/// The span of the value that makes up all of `input`: like [`value_span`] from 0, but bytes after the value
/// are an error.
pub fn whole_value_span(input: &[u8]) -> Result<Range<usize>, BencodeError> {
    let span = value_span(input, 0)?;
    if span.end != input.len() {
        return Err(BencodeError::TrailingBytes { at: span.end });
    }
    Ok(span)
}

/// Finds `key` among the keys of the dictionary that starts at `dict_bytes[0]` and returns its value's span.
///
/// The whole dictionary is scanned (and so checked), so a key that appears twice is reported as
/// [`BencodeError::DuplicateKey`] rather than silently picking one of two values. Bytes after the
/// dictionary are not looked at.
pub fn dict_value_span(dict_bytes: &[u8], key: &[u8]) -> Result<Option<Range<usize>>, BencodeError> {
    let mut found = None;
    for entry in DictEntries::new(dict_bytes, 0)? {
        let entry = entry?;
        if &dict_bytes[entry.key.clone()] == key {
            if found.is_some() {
                return Err(BencodeError::DuplicateKey { at: entry.key.start });
            }
            found = Some(entry.value);
        }
    }
    Ok(found)
}

/// One dictionary entry as spans into the scanned input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DictEntry {
    /// The key's bytes, without its length prefix.
    pub key: Range<usize>,
    /// The whole value.
    pub value: Range<usize>,
}

/// The entries of one dictionary, in file order. Ends after the dictionary's closing `e`; an error ends it
/// too.
#[derive(Clone, Debug)]
pub struct DictEntries<'a> {
    input: &'a [u8],
    /// Where the next key (or the closing `e`) starts; `None` once finished.
    pos: Option<usize>,
}

impl<'a> DictEntries<'a> {
    /// Starts on the dictionary at `input[start]`.
    pub fn new(input: &'a [u8], start: usize) -> Result<Self, BencodeError> {
        match input.get(start) {
            Some(b'd') => Ok(DictEntries { input, pos: Some(start + 1) }),
            Some(_) => Err(BencodeError::NotADictionary { at: start }),
            None => Err(BencodeError::UnexpectedEnd { at: start }),
        }
    }

    fn entry_at(&self, pos: usize) -> Result<Option<DictEntry>, BencodeError> {
        let byte = *self.input.get(pos).ok_or(BencodeError::UnexpectedEnd { at: pos })?;
        if byte == b'e' {
            return Ok(None);
        }
        if !byte.is_ascii_digit() {
            return Err(BencodeError::KeyNotString { at: pos });
        }
        let key = string_span(self.input, pos)?;
        if self.input.get(key.end) == Some(&b'e') {
            return Err(BencodeError::MissingValue { at: key.end });
        }
        let value = value_span(self.input, key.end)?;
        let key = string_contents(self.input, key)?;
        Ok(Some(DictEntry { key, value }))
    }
}

impl Iterator for DictEntries<'_> {
    type Item = Result<DictEntry, BencodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let pos = self.pos?;
        match self.entry_at(pos) {
            Ok(Some(entry)) => {
                self.pos = Some(entry.value.end);
                Some(Ok(entry))
            }
            Ok(None) => {
                self.pos = None;
                None
            }
            Err(e) => {
                self.pos = None;
                Some(Err(e))
            }
        }
    }
}

/// The contents of the byte string whose span (length prefix included) is `span`.
fn string_contents(input: &[u8], span: Range<usize>) -> Result<Range<usize>, BencodeError> {
    let colon =
        input[span.clone()].iter().position(|&b| b == b':').ok_or(BencodeError::BadLength { at: span.start })?;
    Ok(span.start + colon + 1..span.end)
}

/// The span of the byte string `<decimal length>:<bytes>` at `input[start]`, length prefix included.
fn string_span(input: &[u8], start: usize) -> Result<Range<usize>, BencodeError> {
    let mut len: usize = 0;
    let mut pos = start;
    loop {
        match input.get(pos) {
            None => return Err(BencodeError::UnexpectedEnd { at: pos }),
            Some(b':') if pos > start => break,
            Some(&digit) if digit.is_ascii_digit() => {
                len = len
                    .checked_mul(10)
                    .and_then(|l| l.checked_add(usize::from(digit - b'0')))
                    .ok_or(BencodeError::BadLength { at: start })?;
                pos += 1;
            }
            Some(_) => return Err(BencodeError::BadLength { at: start }),
        }
    }
    let body = pos + 1;
    match body.checked_add(len) {
        Some(end) if end <= input.len() => Ok(start..end),
        _ => Err(BencodeError::StringPastEnd { at: start, len }),
    }
}

/// One past the `e` of the integer `i<decimal>e` at `input[start]`.
fn integer_end(input: &[u8], start: usize) -> Result<usize, BencodeError> {
    let bad = BencodeError::BadInteger { at: start };
    let mut pos = start + 1;
    let negative = input.get(pos) == Some(&b'-');
    if negative {
        pos += 1;
    }
    let digits_start = pos;
    // Accumulated as a negative number so that i64::MIN fits.
    let mut value: i64 = 0;
    loop {
        match input.get(pos) {
            None => return Err(BencodeError::UnexpectedEnd { at: pos }),
            Some(b'e') => break,
            Some(&digit) if digit.is_ascii_digit() => {
                value = value.checked_mul(10).and_then(|v| v.checked_sub(i64::from(digit - b'0'))).ok_or(bad)?;
                pos += 1;
            }
            Some(_) => return Err(bad),
        }
    }
    let digits = &input[digits_start..pos];
    let leading_zero = digits.len() > 1 && digits[0] == b'0';
    let negative_zero = negative && digits == b"0";
    if digits.is_empty() || leading_zero || negative_zero || (!negative && value == i64::MIN) {
        return Err(bad);
    }
    Ok(pos + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    #[track_caller]
    fn span(input: &[u8]) -> Result<Range<usize>, BencodeError> {
        value_span(input, 0)
    }

    // ---- Scalars ----

    #[test]
    fn integer_spans() {
        assert_eq!(span(b"i0e"), Ok(0..3));
        assert_eq!(span(b"i42eXYZ"), Ok(0..4));
        assert_eq!(span(b"i-7e"), Ok(0..4));
        assert_eq!(span(b"i9223372036854775807e"), Ok(0..21));
        assert_eq!(span(b"i-9223372036854775808e"), Ok(0..22));
    }

    #[test]
    fn malformed_integers_are_rejected() {
        for bad in [
            &b"ie"[..],
            b"i-e",
            b"i-0e",
            b"i03e",
            b"i-03e",
            b"i1-e",
            b"i+1e",
            b"i 1e",
            b"i9223372036854775808e",
            b"i-9223372036854775809e",
            b"i99999999999999999999999999e",
        ] {
            assert_eq!(span(bad), Err(BencodeError::BadInteger { at: 0 }), "{:?}", String::from_utf8_lossy(bad));
        }
        assert_eq!(span(b"i12"), Err(BencodeError::UnexpectedEnd { at: 3 }));
        assert_eq!(span(b"i"), Err(BencodeError::UnexpectedEnd { at: 1 }));
    }

    #[test]
    fn string_spans() {
        assert_eq!(span(b"0:"), Ok(0..2));
        assert_eq!(span(b"4:spam"), Ok(0..6));
        assert_eq!(span(b"4:spamtrailing"), Ok(0..6));
        assert_eq!(value_span(b"xx3:abc", 2), Ok(2..7));
        // Leading zeros in a length prefix are tolerated (see the module doc).
        assert_eq!(span(b"03:abc"), Ok(0..6));
    }

    #[test]
    fn malformed_strings_are_rejected() {
        assert_eq!(span(b"4:spa"), Err(BencodeError::StringPastEnd { at: 0, len: 4 }));
        assert_eq!(span(b"4"), Err(BencodeError::UnexpectedEnd { at: 1 }));
        assert_eq!(span(b"4x:spam"), Err(BencodeError::BadLength { at: 0 }));
        assert_eq!(span(b""), Err(BencodeError::UnexpectedEnd { at: 0 }));
        assert_eq!(span(b"x"), Err(BencodeError::UnexpectedByte { at: 0, byte: b'x' }));
        assert_eq!(span(b"e"), Err(BencodeError::UnexpectedByte { at: 0, byte: b'e' }));
    }

    #[test]
    fn huge_length_prefixes_are_errors_not_panics() {
        // Fits in usize but runs past the input.
        assert_eq!(span(b"18446744073709551615:x"), Err(BencodeError::StringPastEnd { at: 0, len: usize::MAX }));
        // Overflows usize.
        assert_eq!(span(b"99999999999999999999999:x"), Err(BencodeError::BadLength { at: 0 }));
        // Just past the end, inside a container.
        assert_eq!(span(b"l5:abcd"), Err(BencodeError::StringPastEnd { at: 1, len: 5 }));
    }

    // ---- Containers ----

    #[test]
    fn nested_container_spans() {
        assert_eq!(span(b"le"), Ok(0..2));
        assert_eq!(span(b"de"), Ok(0..2));
        assert_eq!(span(b"l4:spami42ee"), Ok(0..12));
        assert_eq!(span(b"d3:cow3:moo4:spam4:eggse"), Ok(0..24));
        let nested = b"d4:infod5:filesld6:lengthi1e4:pathl1:aeeeee4:tail";
        assert_eq!(span(nested), Ok(0..nested.len() - 6));
        // The inner dictionary's span, found by offset.
        assert_eq!(value_span(nested, 7), Ok(7..nested.len() - 7));
    }

    #[test]
    fn unterminated_containers_are_rejected() {
        assert_eq!(span(b"l"), Err(BencodeError::UnexpectedEnd { at: 1 }));
        assert_eq!(span(b"li1e"), Err(BencodeError::UnexpectedEnd { at: 4 }));
        assert_eq!(span(b"d1:a"), Err(BencodeError::UnexpectedEnd { at: 4 }));
        assert_eq!(span(b"lld"), Err(BencodeError::UnexpectedEnd { at: 3 }));
    }

    #[test]
    fn dictionary_keys_must_be_strings_with_values() {
        assert_eq!(span(b"di1ei2ee"), Err(BencodeError::KeyNotString { at: 1 }));
        assert_eq!(span(b"dlee1:ae"), Err(BencodeError::KeyNotString { at: 1 }));
        assert_eq!(span(b"d1:ae"), Err(BencodeError::MissingValue { at: 4 }));
        assert_eq!(span(b"d1:ai1e1:be"), Err(BencodeError::MissingValue { at: 10 }));
        // A list closing inside a dictionary hands control back to the dictionary's key position.
        assert_eq!(span(b"d1:alei1ee"), Err(BencodeError::KeyNotString { at: 6 }));
        assert_eq!(span(b"d1:ale1:bi1ee"), Ok(0..13));
    }

    #[test]
    fn nesting_up_to_max_depth_is_accepted() {
        let mut input = vec![b'l'; MAX_DEPTH];
        input.resize(2 * MAX_DEPTH, b'e');
        assert_eq!(span(&input), Ok(0..input.len()));
    }

    #[test]
    fn nesting_deeper_than_max_depth_is_rejected() {
        let mut input = vec![b'l'; MAX_DEPTH + 1];
        input.resize(2 * (MAX_DEPTH + 1), b'e');
        assert_eq!(span(&input), Err(BencodeError::TooDeep { at: MAX_DEPTH }));
        // Dictionaries count too, and a million levels cost no stack.
        let mut deep = b"d1:a".repeat(1_000_000);
        deep.push(b'e');
        assert_eq!(span(&deep), Err(BencodeError::TooDeep { at: 4 * MAX_DEPTH }));
    }

    #[test]
    fn whole_value_rejects_trailing_bytes() {
        assert_eq!(whole_value_span(b"d1:ai1ee"), Ok(0..8));
        assert_eq!(whole_value_span(b"d1:ai1ee\n"), Err(BencodeError::TrailingBytes { at: 8 }));
    }

    // ---- Dictionary lookup ----

    #[test]
    fn dict_value_span_finds_keys_at_the_top_level_only() {
        let dict = b"d8:announce3:url4:infod4:name1:x6:lengthi3ee1:zi0ee";
        let info = dict_value_span(dict, b"info").unwrap().unwrap();
        assert_eq!(&dict[info.clone()], b"d4:name1:x6:lengthi3ee");
        assert_eq!(dict_value_span(dict, b"announce").unwrap().map(|r| &dict[r]), Some(&b"3:url"[..]));
        // `name` exists only inside `info`.
        assert_eq!(dict_value_span(dict, b"name"), Ok(None));
        assert_eq!(dict_value_span(b"de", b"info"), Ok(None));
    }

    #[test]
    fn dict_value_span_rejects_duplicates_and_non_dictionaries() {
        assert_eq!(dict_value_span(b"d4:infoi1e4:infoi2ee", b"info"), Err(BencodeError::DuplicateKey { at: 12 }));
        assert_eq!(dict_value_span(b"li1ee", b"info"), Err(BencodeError::NotADictionary { at: 0 }));
        assert_eq!(dict_value_span(b"", b"info"), Err(BencodeError::UnexpectedEnd { at: 0 }));
        assert_eq!(dict_value_span(b"d4:info", b"info"), Err(BencodeError::UnexpectedEnd { at: 7 }));
        assert_eq!(dict_value_span(b"d4:infoe", b"info"), Err(BencodeError::MissingValue { at: 7 }));
        assert_eq!(dict_value_span(b"di1ei1ee", b"info"), Err(BencodeError::KeyNotString { at: 1 }));
    }

    #[test]
    fn dict_entries_yield_keys_and_values_in_file_order() {
        let dict = b"d1:bi1e1:ali2eee";
        let entries: Vec<_> = DictEntries::new(dict, 0)
            .unwrap()
            .map(|e| e.map(|DictEntry { key, value }| (&dict[key], &dict[value])))
            .collect();
        assert_eq!(entries, [Ok((&b"b"[..], &b"i1e"[..])), Ok((&b"a"[..], &b"li2ee"[..]))]);
    }

    #[test]
    fn error_messages_are_one_lower_case_line() {
        let errors = [
            BencodeError::UnexpectedEnd { at: 1 },
            BencodeError::UnexpectedByte { at: 1, byte: b'x' },
            BencodeError::BadInteger { at: 1 },
            BencodeError::BadLength { at: 1 },
            BencodeError::StringPastEnd { at: 1, len: 9 },
            BencodeError::TooDeep { at: 1 },
            BencodeError::KeyNotString { at: 1 },
            BencodeError::MissingValue { at: 1 },
            BencodeError::TrailingBytes { at: 1 },
            BencodeError::NotADictionary { at: 1 },
            BencodeError::DuplicateKey { at: 1 },
        ];
        for e in errors {
            let text = e.to_string();
            assert!(!text.contains('\n') && !text.ends_with('.'), "{text}");
            assert!(text.starts_with(|c: char| c.is_ascii_lowercase()), "{text}");
        }
    }

    // ---- Mutation ----

    /// The scanner never panics, and an accepted span lies inside the input and starts where asked.
    #[test]
    fn mutated_and_random_inputs_never_panic() {
        let valid: &[u8] = b"d8:announce22:http://127.0.0.1/annou4:infod5:filesld6:lengthi3e4:pathl1:aeed6:lengthi0e4:pathl1:b1:ceee4:name3:dir12:piece lengthi16384e6:pieces20:01234567890123456789ee";
        assert_eq!(whole_value_span(valid), Ok(0..valid.len()));
        let mut rng = Rng::seeded(0xbe4c0de);
        let alphabet = b"deil0123456789:-x";
        for _ in 0..20_000 {
            let input = rng.mutate(&[valid], alphabet);
            let start = rng.below(input.len() as u64 + 1) as usize;
            if let Ok(r) = value_span(&input, start) {
                assert!(r.start == start && r.end <= input.len() && r.start < r.end);
            }
            let _ = whole_value_span(&input);
            if let Ok(Some(r)) = dict_value_span(&input, b"info") {
                assert!(r.end <= input.len());
            }
        }
    }
}
