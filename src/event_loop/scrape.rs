//! `rill info --scrape`: a small one-shot loop that scrapes every tracker of a torrent.
