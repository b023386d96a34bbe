//! Human-written sizes ("16KiB", "1MB", "512") and durations ("1500ms", "30s", "2m").

use std::time::Duration;

/// Parses a byte size. Binary (KiB, MiB, GiB) and decimal (KB, MB, GB) suffixes; bare numbers are bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!("`{s}` is not a size; write it like \"16KiB\", \"1MiB\" or \"4096\""));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        other => {
            return Err(format!(
                "`{s}` has unknown unit `{other}`; use B, KiB, MiB, GiB, KB, MB or GB"
            ))
        }
    };
    n.checked_mul(mult).ok_or_else(|| format!("`{s}` is too large"))
}

/// Parses a duration with a unit: ms, s, m or h.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let hint = "write it like \"1500ms\", \"30s\", \"5m\" or \"1h\"";
    if num.is_empty() {
        return Err(format!("`{s}` is not a duration; {hint}"));
    }
    let n: u64 = num.parse().map_err(|_| format!("`{s}` is too large"))?;
    match unit.trim() {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        "" => Err(format!("`{s}` needs a unit; {hint}")),
        other => Err(format!("`{s}` has unknown unit `{other}`; {hint}")),
    }
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
