//! Observing the network: what the user sees (status line, summaries) and what machines read.

pub mod chunks;
pub mod client;
pub mod info;
pub mod logpanel;
pub mod magnet_info;
pub mod output;
pub mod rates;
pub mod screen;
pub mod stats;
pub mod terminal;
pub mod trace;
pub mod ui;
pub mod units;
pub mod view;
