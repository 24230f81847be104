//! Human units: byte sizes, rates and durations for display, and rate parsing for the CLI.
//!
//! Owns: formatting numbers for people (binary prefixes: 1 KiB = 1024 B) and reading rates from the command
//! line. Must not: know where the numbers come from or print anything.

use std::time::Duration;

const UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
const KIB: f64 = 1024.0;

/// A byte count with a binary prefix and three significant digits: "512 B", "1.50 MiB", "38.0 KiB",
/// "977 KiB". Whole bytes below 1 KiB.
pub fn bytes(n: u64) -> String {
    if n < 1024 {
        return format!("{n} B");
    }
    scaled(n as f64)
}

/// A transfer rate: "1.20 MiB/s", "999 B/s". Negative or non-finite rates show as "0 B/s".
pub fn rate(bytes_per_sec: f64) -> String {
    if !bytes_per_sec.is_finite() || bytes_per_sec <= 0.0 {
        return "0 B/s".to_owned();
    }
    if bytes_per_sec < 1023.5 {
        return format!("{bytes_per_sec:.0} B/s");
    }
    format!("{}/s", scaled(bytes_per_sec))
}

/// `value` (at least 1023.5) in the largest unit that keeps it below 1024 once rounded.
fn scaled(mut value: f64) -> String {
    let mut unit = 0;
    while unit + 1 < UNITS.len() && value >= 1023.5 {
        value /= KIB;
        unit += 1;
    }
    // Decimals for three significant digits, chosen on the rounded value so 9.999 shows as "10.0".
    if value < 9.995 {
        format!("{value:.2} {}", UNITS[unit])
    } else if value < 99.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.0} {}", UNITS[unit])
    }
}

/// A duration for an ETA or elapsed time, two units at most: "2d03h", "1h02m", "3m05s", "12s", and
/// tenths under ten seconds ("0.8s"), where a whole-second figure would say nothing.
pub fn duration(d: Duration) -> String {
    if d < Duration::from_secs(10) && !d.is_zero() {
        return format!("{:.1}s", d.as_secs_f64());
    }
    let secs = d.as_secs();
    let (days, hours, minutes, seconds) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    if days > 0 {
        format!("{days}d{hours:02}h")
    } else if hours > 0 {
        format!("{hours}h{minutes:02}m")
    } else if minutes > 0 {
        format!("{minutes}m{seconds:02}s")
    } else {
        format!("{seconds}s")
    }
}

/// Reads a rate in bytes per second: a decimal number with an optional binary suffix, `k`/`K` = 1024,
/// `m`/`M` = 1024², `g`/`G` = 1024³ ("500k", "2M", "1.5m", "1000"). A fraction of a byte rounds down.
/// What a rate of 0 means (unlimited or nothing) is the caller's decision.
/// The error is one line for the CLI to print after the flag name.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let invalid = || format!("invalid rate {s:?}: expected a number with an optional k, m or g suffix");
    let too_large = || format!("rate {s:?} is too large");
    let text = s.trim();
    let (number, multiplier): (&str, u128) = match text.char_indices().last() {
        Some((i, 'k' | 'K')) => (&text[..i], 1 << 10),
        Some((i, 'm' | 'M')) => (&text[..i], 1 << 20),
        Some((i, 'g' | 'G')) => (&text[..i], 1 << 30),
        _ => (text, 1),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let all_digits = |part: &str| part.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && fraction.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return Err(invalid());
    }
    // Exact integer arithmetic in u128: whole·m + fraction·m / 10^digits. Past 20 significant whole
    // digits the value exceeds u64 anyway; fraction digits past the 12th are worth less than a byte.
    let whole = whole.trim_start_matches('0');
    if whole.len() > 20 {
        return Err(too_large());
    }
    let fraction = &fraction[..fraction.len().min(12)];
    let parse = |digits: &str| digits.bytes().fold(0u128, |n, d| n * 10 + u128::from(d - b'0'));
    let scale = 10u128.pow(fraction.len() as u32);
    let value = parse(whole) * multiplier + parse(fraction) * multiplier / scale;
    u64::try_from(value).map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_below_one_kib_are_whole() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1023), "1023 B");
    }

    #[test]
    fn bytes_use_binary_prefixes_with_three_significant_digits() {
        assert_eq!(bytes(1024), "1.00 KiB");
        assert_eq!(bytes(1536 * 1024), "1.50 MiB");
        assert_eq!(bytes(38_005), "37.1 KiB");
        assert_eq!(bytes(1_000_000), "977 KiB");
        assert_eq!(bytes(3_435_973_837), "3.20 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn bytes_rounding_moves_to_the_next_unit() {
        // 1023.9 KiB would round to "1024 KiB".
        assert_eq!(bytes(1_048_500), "1.00 MiB");
        // 9.999 KiB would print as "10.00 KiB" with two decimals.
        assert_eq!(bytes(10_239), "10.0 KiB");
        assert_eq!(bytes(102_399), "100 KiB");
    }

    #[test]
    fn rates() {
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(-5.0), "0 B/s");
        assert_eq!(rate(f64::NAN), "0 B/s");
        assert_eq!(rate(f64::INFINITY), "0 B/s");
        assert_eq!(rate(999.4), "999 B/s");
        assert_eq!(rate(1023.7), "1.00 KiB/s");
        assert_eq!(rate(1.2 * 1024.0 * 1024.0), "1.20 MiB/s");
        assert_eq!(rate(500.0 * 1024.0 * 1024.0), "500 MiB/s");
    }

    #[test]
    fn durations_show_two_units_at_most() {
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(12_900)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(duration(Duration::from_secs(3600 + 2 * 60 + 59)), "1h02m");
        assert_eq!(duration(Duration::from_secs(2 * 86_400 + 3 * 3600 + 7)), "2d03h");
        assert_eq!(duration(Duration::MAX), "213503982334601d07h");
    }

    #[test]
    fn parse_rate_reads_plain_and_suffixed_numbers() {
        assert_eq!(parse_rate("1000"), Ok(1000));
        assert_eq!(parse_rate("0"), Ok(0));
        assert_eq!(parse_rate("500k"), Ok(500 * 1024));
        assert_eq!(parse_rate("500K"), Ok(500 * 1024));
        assert_eq!(parse_rate("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_rate("1.5m"), Ok(1_572_864));
        assert_eq!(parse_rate("1g"), Ok(1 << 30));
        assert_eq!(parse_rate(" 3G "), Ok(3 << 30));
        assert_eq!(parse_rate(".5k"), Ok(512));
        assert_eq!(parse_rate("2."), Ok(2));
        assert_eq!(parse_rate("0.1"), Ok(0));
        assert_eq!(parse_rate("1.999999999k"), Ok(2047));
    }

    #[test]
    fn parse_rate_rejects_garbage_with_one_line() {
        for bad in ["", "k", ".", "-1", "+1", "1.2.3", "1 k", "1kb", "1e3", "abc", "1,5m", "١٢"] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.starts_with("invalid rate") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn parse_rate_rejects_values_beyond_u64() {
        assert_eq!(parse_rate("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_rate("18446744073709551616").unwrap_err().contains("too large"));
        assert!(parse_rate("17179869184g").unwrap_err().contains("too large"));
        assert!(parse_rate("99999999999999999999999").unwrap_err().contains("too large"));
        assert_eq!(parse_rate("000000000000000000000001k"), Ok(1024));
        assert_eq!(parse_rate("1.00000000000000000001k"), Ok(1024));
    }
}
