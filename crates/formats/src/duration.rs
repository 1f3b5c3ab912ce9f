//! Durations as users write them: `farm cache gc --older-than 30d` and
//! farm.toml `[cache] ttl = "7d"` share this one parser, and
//! [`format_duration`] prints them back in the same syntax.

use std::time::Duration;

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("duration `{input}`: {problem}; expected numbers with units s, m, h, d or w, e.g. 30d, 12h, 90m or 1d12h")]
pub struct ParseDurationError {
    input: String,
    problem: String,
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

/// Whole seconds in the largest units first (`7d`, `1d12h`, `90s` → `1m30s`);
/// [`parse_duration`] reads it back. Weeks are written as days.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    if secs == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What farm prints is what a user may type back, for the same duration.
    #[test]
    fn formatted_durations_read_back() {
        for (secs, text) in [
            (7 * 86_400, "7d"),
            (86_400 + 12 * 3_600, "1d12h"),
            (90, "1m30s"),
            (0, "0s"),
        ] {
            let d = Duration::from_secs(secs);
            assert_eq!(format_duration(d), text);
            assert_eq!(parse_duration(text).unwrap(), d);
        }
    }
}
