//! Human units: byte sizes, rates and durations for display, and rate parsing for the CLI.
