//! Sizes and durations as users type them (`--max-size 10GiB`, `--older-than 30d`).

use std::time::Duration;

/// A size string that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("size `{input}`: {problem}; expected a number with an optional unit, e.g. 1024, 500M, 10GiB or 1.5GB (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB powers of 1000)")]
pub struct ParseSizeError {
    input: String,
    problem: String,
}

/// A duration string that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("duration `{input}`: {problem}; expected numbers with units s, m, h, d or w, e.g. 30d, 12h, 90m or 1d12h")]
pub struct ParseDurationError {
    input: String,
    problem: String,
}

/// Parses `1024`, `500M`, `10GiB`, `1.5GB`, `2 tb` (case-insensitive) into bytes.
pub fn parse_size(input: &str) -> Result<u64, ParseSizeError> {
    let err = |problem: &str| ParseSizeError {
        input: input.to_string(),
        problem: problem.to_string(),
    };
    let s = input.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = (&s[..split], s[split..].trim());
    if number.is_empty() {
        return Err(err("no number"));
    }
    let multiplier: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return Err(err(&format!("unknown unit `{unit}`"))),
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(err("malformed number"));
    }
    let too_big = || err("too large");
    let whole: u64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| too_big())?
    };
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_big)?;
    if !fraction.is_empty() {
        // Exact decimal arithmetic: fraction digits × multiplier / 10^digits, rounded down.
        let digits = fraction.len().min(18);
        let numerator: u128 = fraction[..digits].parse().map_err(|_| err("malformed number"))?;
        let part = numerator * multiplier as u128 / 10u128.pow(digits as u32);
        bytes = bytes.checked_add(part as u64).ok_or_else(too_big)?;
    }
    Ok(bytes)
}

/// Parses `30d`, `12h`, `90m`, `45s`, `2w` or combinations like `1d12h`.
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |problem: &str| ParseDurationError {
        input: input.to_string(),
        problem: problem.to_string(),
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    let mut total: u64 = 0;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(err(&format!("expected a number at `{rest}`")));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| err("number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit()).unwrap_or(rest.len());
        let unit = rest[..unit_len].trim();
        rest = &rest[unit_len..];
        let seconds: u64 = match unit {
            "s" => 1,
            "m" => 60,
            "h" => 3_600,
            "d" => 86_400,
            "w" => 604_800,
            "" => return Err(err("a number needs a unit (hint: `30d` for thirty days)")),
            _ => return Err(err(&format!("unknown unit `{unit}`"))),
        };
        total = n
            .checked_mul(seconds)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(|| err("too large"))?;
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_and_decimal_units() {
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert_eq!(parse_size("500M").unwrap(), 500 << 20);
        assert_eq!(parse_size("10GiB").unwrap(), 10 << 30);
        assert_eq!(parse_size("10gib").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5GB").unwrap(), 1_500_000_000);
        assert_eq!(parse_size("0.5K").unwrap(), 512);
        assert_eq!(parse_size(" 2 TB ").unwrap(), 2_000_000_000_000);
        assert_eq!(parse_size("7b").unwrap(), 7);
    }

    #[test]
    fn bad_sizes_name_the_input_and_the_problem() {
        for (input, problem) in [
            ("", "no number"),
            ("GiB", "no number"),
            ("10 parsecs", "unknown unit `parsecs`"),
            ("1.2.3G", "malformed number"),
            ("99999999999T", "too large"),
        ] {
            let e = parse_size(input).unwrap_err().to_string();
            assert!(
                e.contains(&format!("`{input}`")) && e.contains(problem),
                "{input:?}: {e}"
            );
        }
    }

    #[test]
    fn durations_with_units_and_combinations() {
        assert_eq!(parse_duration("30d").unwrap(), Duration::from_secs(30 * 86_400));
        assert_eq!(parse_duration("12h").unwrap(), Duration::from_secs(12 * 3_600));
        assert_eq!(parse_duration("90m").unwrap(), Duration::from_secs(90 * 60));
        assert_eq!(
            parse_duration("1d12h").unwrap(),
            Duration::from_secs(86_400 + 12 * 3_600)
        );
        assert_eq!(parse_duration("2w").unwrap(), Duration::from_secs(14 * 86_400));
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for (input, problem) in [
            ("30", "needs a unit"),
            ("", "empty"),
            ("3y", "unknown unit `y`"),
            ("d", "expected a number"),
        ] {
            let e = parse_duration(input).unwrap_err().to_string();
            assert!(e.contains(problem), "{input:?}: {e}");
        }
    }
}
