//! Typed reads of an already-checked bencode span: integers, byte strings, list items and dictionary keys.
//!
//! Owns: turning spans that [`bencode::value_span`] has checked into values, without copying or allocating,
//! so that a torrent with hundreds of thousands of files costs no intermediate structures.
//! Must not: decide what a field means (that is `metainfo`).

use std::ops::Range;

use crate::bencode::{self, DictEntries};

/// The integer whose span (`i…e`) is `span`, or `None` if the value is not an integer.
pub(super) fn int(bytes: &[u8], span: &Range<usize>) -> Option<i64> {
    let value = bytes.get(span.clone())?;
    let body = value.strip_prefix(b"i")?.strip_suffix(b"e")?;
    std::str::from_utf8(body).ok()?.parse().ok()
}

/// The contents of the byte string whose span (length prefix included) is `span`, or `None` if the value is
/// not a string.
pub(super) fn string<'a>(bytes: &'a [u8], span: &Range<usize>) -> Option<&'a [u8]> {
    let value = bytes.get(span.clone())?;
    if !value.first()?.is_ascii_digit() {
        return None;
    }
    let colon = value.iter().position(|&b| b == b':')?;
    value.get(colon + 1..)
}

/// The spans of the items of the list whose span is `span`, or `None` if the value is not a list.
pub(super) fn list_items<'a>(bytes: &'a [u8], span: &Range<usize>) -> Option<ListItems<'a>> {
    if bytes.get(span.start) != Some(&b'l') {
        return None;
    }
    Some(ListItems { bytes, pos: span.start + 1, end: span.end })
}

/// Iterator over the spans of one list's items; stops at the closing `e` (or at a scan error, which the
/// checked span cannot hold).
pub(super) struct ListItems<'a> {
    bytes: &'a [u8],
    pos: usize,
    end: usize,
}

impl Iterator for ListItems<'_> {
    type Item = Range<usize>;

    fn next(&mut self) -> Option<Range<usize>> {
        if self.pos >= self.end || self.bytes.get(self.pos) == Some(&b'e') {
            return None;
        }
        match bencode::value_span(self.bytes, self.pos) {
            Ok(span) if span.end <= self.end => {
                self.pos = span.end;
                Some(span)
            }
            _ => {
                self.pos = self.end;
                None
            }
        }
    }
}

/// The dictionary at `span` as `(key, value span)` pairs, or `None` if the value is not a dictionary.
pub(super) fn dict_entries<'a>(
    bytes: &'a [u8],
    span: &Range<usize>,
) -> Option<impl Iterator<Item = (&'a [u8], Range<usize>)> + 'a> {
    let entries = DictEntries::new(bytes, span.start).ok()?;
    Some(entries.map_while(Result::ok).map(move |entry| (&bytes[entry.key], entry.value)))
}
