//! Tracker errors: everything that can end one announce or scrape, as data.
//!
//! Owns: `TrackerError` and its one-line, lower-case `Display`. A tracker's own `failure reason` is data
//! (`Failure`), sanitised before it gets here.
//! Must not: log; the engine logs the `TrackerEvent` that carries the error.

use std::fmt;
use std::io;

use super::codec::UrlError;
use crate::bencode::BencodeError;
use crate::http::HttpError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TrackerError {
    /// The announce URL (or a redirect's `Location`) cannot be used.
    Url(UrlError),
    /// The host name did not resolve; the resolver's message.
    Resolve(String),
    /// The TCP connection could not be made.
    Connect(io::ErrorKind),
    /// The connection or the UDP socket failed after it was made.
    Io(io::ErrorKind),
    /// No (complete) answer in time.
    TimedOut,
    Http(HttpError),
    /// An HTTP status other than 2xx or a followed redirect.
    HttpStatus(u16),
    /// A redirect without a `Location`.
    RedirectWithoutLocation,
    TooManyRedirects,
    /// The body is not bencode.
    Bencode(BencodeError),
    /// The reply is well-formed but lacks what it must hold.
    BadReply(&'static str),
    /// The tracker refused: `failure reason` (HTTP) or an action 3 error (UDP), sanitised.
    Failure(String),
    /// The tracker's URL has no scrape convention (BEP 48).
    NoScrape,
    /// The scrape reply does not list our info-hash.
    NotInScrape,
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrackerError::Url(e) => write!(f, "{e}"),
            TrackerError::Resolve(msg) => write!(f, "cannot resolve host: {msg}"),
            TrackerError::Connect(kind) => write!(f, "cannot connect: {kind}"),
            TrackerError::Io(kind) => write!(f, "connection failed: {kind}"),
            TrackerError::TimedOut => f.write_str("timed out"),
            TrackerError::Http(e) => write!(f, "bad http response: {e}"),
            TrackerError::HttpStatus(code) => write!(f, "http status {code}"),
            TrackerError::RedirectWithoutLocation => f.write_str("redirect without a location"),
            TrackerError::TooManyRedirects => f.write_str("too many redirects"),
            TrackerError::Bencode(e) => write!(f, "reply is not bencode: {e}"),
            TrackerError::BadReply(what) => write!(f, "bad reply: {what}"),
            TrackerError::Failure(reason) => write!(f, "tracker refused: {reason}"),
            TrackerError::NoScrape => f.write_str("tracker has no scrape url"),
            TrackerError::NotInScrape => f.write_str("tracker does not know this torrent"),
        }
    }
}

impl std::error::Error for TrackerError {}

impl From<UrlError> for TrackerError {
    fn from(e: UrlError) -> Self {
        TrackerError::Url(e)
    }
}

impl From<HttpError> for TrackerError {
    fn from(e: HttpError) -> Self {
        TrackerError::Http(e)
    }
}

impl From<BencodeError> for TrackerError {
    fn from(e: BencodeError) -> Self {
        TrackerError::Bencode(e)
    }
}
