//! Observing the network: what the user sees (status line, summaries) and what machines read.

pub mod client;
pub mod info;
pub mod magnet_info;
pub mod output;
pub mod stats;
pub mod trace;
pub mod ui;
pub mod units;
pub mod view;
