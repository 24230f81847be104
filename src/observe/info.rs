//! `rill info`: a torrent described for a person.
