//! Tracker I/O driver: sockets, DNS helper thread and the waker bridge for `tracker::Trackers`.
