//! Human-written sizes ("16KiB", "1MB", "512") and durations ("1500ms", "1.5s", "2m").
//! Durations may carry a decimal fraction, read digit by digit (never through a float) so
//! "1.1s" is exactly 1100 ms; sizes are whole numbers of their unit.

use std::time::Duration;

/// Binary then decimal size units, largest first within each family, as multiples of a byte.
const SIZE_UNITS: &[(&str, u64)] = &[
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("GB", 1_000_000_000),
    ("MB", 1_000_000),
    ("KB", 1_000),
    ("B", 1),
];

fn size_unit(unit: &str) -> Option<u64> {
    match unit {
        "" | "B" => Some(1),
        "kB" => Some(1_000),
        u => SIZE_UNITS.iter().find(|(name, _)| *name == u).map(|&(_, m)| m),
    }
}

/// Parses a byte size. Binary (KiB, MiB, GiB) and decimal (KB, MB, GB) suffixes; bare numbers are bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size; write it like \"16KiB\", \"1MiB\" or \"4096\""));
    }
    if let Some(rest) = unit.strip_prefix(['.', ',']) {
        return Err(fractional_size(s, num, rest));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
    let Some(mult) = size_unit(unit.trim()) else {
        return Err(format!("`{s}` has unknown unit `{}`; use B, KiB, MiB, GiB, KB, MB or GB", unit.trim()));
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

/// The error for "1.5KiB": sizes are whole numbers of a unit. When the value is a whole number of
/// bytes it is offered in the largest unit of the same family that keeps it whole ("1536KiB").
fn fractional_size(s: &str, whole: &str, rest: &str) -> String {
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (frac, unit) = rest.split_at(digits);
    let unit = unit.trim();
    let frac = frac.trim_end_matches('0');
    let Some(mult) = size_unit(unit) else {
        return format!("`{s}` is not a whole number; sizes are whole numbers of B, KiB, MiB, GiB, KB, MB or GB");
    };
    let of = if unit.is_empty() { "bytes" } else { unit };
    let problem = format!("`{s}` is not a whole number of {of}; sizes are whole numbers of a unit");
    if frac.len() > 18 || whole.len() > 18 {
        return problem;
    }
    let scale = 10u128.pow(frac.len() as u32);
    let value = whole.parse::<u128>().unwrap_or(0) * scale + frac.parse::<u128>().unwrap_or(0);
    let bytes = value * u128::from(mult);
    if !bytes.is_multiple_of(scale) {
        return format!("{problem}, and this one is not a whole number of bytes either");
    }
    let bytes = bytes / scale;
    let binary = mult.is_power_of_two();
    SIZE_UNITS
        .iter()
        .filter(|&&(_, m)| m <= mult && (m.is_power_of_two() == binary || m == 1))
        .find(|&&(_, m)| bytes.is_multiple_of(u128::from(m)))
        .map(|&(name, m)| format!("{problem}: write \"{}{name}\"", bytes / u128::from(m)))
        .unwrap_or(problem)
}

const DURATION_HINT: &str = "write it like \"1500ms\", \"1.5s\", \"30s\", \"5m\" or \"1h\"";

/// Parses a duration: a number with a unit (ms, s, m or h). The number may have a decimal
/// fraction ("1.5s", "0.25s", "2.5m"); a fraction finer than a nanosecond is refused, not rounded.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if t.starts_with('-') {
        return Err(format!("`{s}` is negative; durations are positive"));
    }
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let unit = unit.trim();
    if num.is_empty() {
        return Err(format!("`{s}` is not a duration; {DURATION_HINT}"));
    }
    let nanos_per_unit: u128 = match unit {
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        "" => return Err(format!("`{s}` needs a unit; {DURATION_HINT}")),
        u if u.starts_with(',') => return Err(format!("`{s}` uses a decimal comma; write a point, e.g. \"1.5s\"")),
        u => return Err(format!("`{s}` has unknown unit `{u}`; {DURATION_HINT}")),
    };
    let (whole, frac) = num.split_once('.').unwrap_or((num, ""));
    if frac.contains('.') {
        return Err(format!("`{s}` has more than one decimal point; {DURATION_HINT}"));
    }
    if whole.is_empty() || (num.contains('.') && frac.is_empty()) {
        return Err(format!("`{s}` needs digits on both sides of the decimal point, e.g. \"0.5s\" or \"1.0s\""));
    }
    let too_large = || format!("`{s}` is too large");
    // Trailing zeros add no precision; without them, more than 13 fraction digits (the digits of
    // an hour in nanoseconds) can never come out whole.
    let frac = frac.trim_end_matches('0');
    if frac.len() > 13 {
        return Err(format!("`{s}` is more precise than a nanosecond; round it or use a smaller unit"));
    }
    let scale = 10u128.pow(frac.len() as u32);
    let frac_nanos = frac.parse::<u128>().unwrap_or(0) * nanos_per_unit;
    if !frac_nanos.is_multiple_of(scale) {
        return Err(format!("`{s}` is more precise than a nanosecond; round it or use a smaller unit"));
    }
    let nanos = whole
        .parse::<u128>()
        .ok()
        .and_then(|w| w.checked_mul(nanos_per_unit))
        .and_then(|n| n.checked_add(frac_nanos / scale))
        .ok_or_else(too_large)?;
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_large())?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written() {
        let cases: &[(&str, Option<u64>)] = &[
            ("16KiB", Some(16384)),
            ("1MiB", Some(1 << 20)),
            ("4096", Some(4096)),
            ("2KB", Some(2000)),
            (" 1 GiB ", Some(1 << 30)),
            ("KiB", None),
            ("12XB", None),
            ("-1", None),
            ("99999999999999999999GiB", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_size(input).ok(), *want, "{input}");
        }
    }

    #[test]
    fn durations_need_units() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1500ms", Some(Duration::from_millis(1500))),
            ("30s", Some(Duration::from_secs(30))),
            ("2m", Some(Duration::from_secs(120))),
            ("1h", Some(Duration::from_secs(3600))),
            ("30", None),
            ("s", None),
            ("3d", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_duration(input).ok(), *want, "{input}");
        }
    }
}
