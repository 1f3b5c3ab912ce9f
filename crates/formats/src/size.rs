//! Byte sizes: one parser for what users type (`--size-limit 500KiB`,
//! `farm cache gc --max-size 10GB`) and one formatter for what farm prints.
//!
//! The rule (spec/sizes.md), the same for every flag:
//!
//! | written                                   | bytes                    |
//! |-------------------------------------------|--------------------------|
//! | `1024`, `1024B`                           | 1024                     |
//! | `KiB`, `MiB`, `GiB`, `TiB` (or `Ki`, `Mi`…) | powers of 1024         |
//! | `kB`, `MB`, `GB`, `TB`                    | powers of 1000           |
//! | bare `K`, `M`, `G`, `T`                   | powers of 1024           |
//!
//! Units are case-insensitive (`10gib`, `2 tb`, `500m`) and may follow a
//! space. A decimal point is allowed (`1.5MB` is 1 500 000, `1.5K` is 1536);
//! the arithmetic is exact, and a fraction of a byte is dropped (`0.0001K`
//! is 0).
//!
//! Bare letters follow Docker: go-units' `RAMInBytes`, behind
//! `docker run --memory 512m` and `--shm-size`, reads `k`/`m`/`g`/`t`
//! case-insensitively as 1024ⁿ, so `500M` means the same to farm as to
//! `docker run`. Docker goes further and reads `MB` and `MiB` as 1024ⁿ too
//! (its regex takes an optional `i` and an optional `b` after the letter);
//! farm does not: `kB`/`MB`/`GB`/`TB` are the SI units their names say, as
//! in go-units' own `FromHumanSize`. Docker also parses through a float and
//! truncates; farm computes the exact value.
//!
//! The formatter writes binary units with one decimal (`1.5 KiB`), which
//! the parser reads back.

/// A size that could not be read: names the input, what is wrong with it,
/// and the expected form.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "size `{input}`: {problem}; expected a number with an optional unit, e.g. 1024, 500M, 10GiB or 1.5GB \
     (KiB/MiB/GiB/TiB and bare K/M/G/T are powers of 1024, kB/MB/GB/TB powers of 1000)"
)]
pub struct ParseSizeError {
    input: String,
    problem: String,
}

/// More decimal places than this are refused rather than silently cut: they
/// cannot mean anything for a byte count, and the bound keeps the exact
/// arithmetic within `u128` (10²⁴ × 1024⁴ < 2¹²⁸).
const MAX_DECIMAL_PLACES: usize = 24;

/// Reads a size as users write it (module docs): `1024`, `500M`, `10GiB`,
/// `1.5GB`, `2 tb`.
pub fn parse_size(input: &str) -> Result<u64, ParseSizeError> {
    let fail = |problem: String| ParseSizeError {
        input: input.to_string(),
        problem,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(fail("empty".into()));
    }
    let number_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = (&s[..number_end], s[number_end..].trim_start());
    if number.is_empty() {
        return Err(fail("no number".into()));
    }
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(fail("malformed number".into()));
    }
    let multiplier = unit_multiplier(unit).ok_or_else(|| fail(format!("unknown unit `{unit}`")))?;

    let too_large = || fail("too large".into());
    // Only digits remain, so the one way to fail is overflow.
    let whole: u128 = whole.parse().map_err(|_| too_large())?;
    let mut bytes = whole.checked_mul(multiplier).ok_or_else(too_large)?;
    let fraction = fraction.trim_end_matches('0');
    if !fraction.is_empty() {
        if fraction.len() > MAX_DECIMAL_PLACES {
            return Err(fail(format!("more than {MAX_DECIMAL_PLACES} decimal places")));
        }
        let numerator: u128 = fraction.parse().expect("at most 24 digits fit in u128");
        // Rounds down: the part of a byte left over is not a byte.
        let part = numerator * multiplier / 10u128.pow(fraction.len() as u32);
        bytes = bytes.checked_add(part).ok_or_else(too_large)?;
    }
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Bytes per unit, or `None` for a unit farm does not know.
fn unit_multiplier(unit: &str) -> Option<u128> {
    Some(match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => return None,
    })
}

/// Bytes for people: `N B` below 1 KiB, otherwise one decimal in the
/// largest binary unit (up to TiB) that keeps the number below 1024, e.g.
/// `1.5 KiB`, `245.3 KiB`, `3.5 MiB`.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Dividing by a power of two only changes an f64's exponent, so below
    // 2⁵³ bytes `value` is exact and `{:.1}` rounds the true quotient.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // From 1023.95 on, one decimal would print "1024.0": use the next unit.
    while value >= 1023.95 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    #[test]
    fn a_bare_number_is_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size("512B"), Ok(512));
        assert_eq!(parse_size("7b"), Ok(7));
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(u64::MAX));
    }

    #[test]
    fn iec_units_are_powers_of_1024() {
        assert_eq!(parse_size("1KiB"), Ok(KIB));
        assert_eq!(parse_size("200KiB"), Ok(200 * KIB));
        assert_eq!(parse_size("1MiB"), Ok(MIB));
        assert_eq!(parse_size("10GiB"), Ok(10 * GIB));
        assert_eq!(parse_size("2TiB"), Ok(2 * TIB));
        assert_eq!(parse_size("3Mi"), Ok(3 * MIB), "Kubernetes' spelling");
    }

    #[test]
    fn si_units_are_powers_of_1000() {
        assert_eq!(parse_size("200kB"), Ok(200_000));
        assert_eq!(parse_size("200KB"), Ok(200_000));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("2TB"), Ok(2_000_000_000_000));
    }

    #[test]
    fn bare_letters_are_powers_of_1024_as_docker_reads_them() {
        for (letter, bytes) in [("K", KIB), ("M", MIB), ("G", GIB), ("T", TIB)] {
            assert_eq!(parse_size(&format!("5{letter}")), Ok(5 * bytes), "{letter}");
            let lower = letter.to_ascii_lowercase();
            assert_eq!(parse_size(&format!("5{lower}")), Ok(5 * bytes), "{lower}");
        }
        assert_eq!(
            parse_size("500M"),
            Ok(500 * MIB),
            "the same for --size-limit and --max-size"
        );
    }

    #[test]
    fn units_are_case_insensitive_and_may_follow_a_space() {
        assert_eq!(parse_size("10gib"), Ok(10 * GIB));
        assert_eq!(parse_size("10GIB"), Ok(10 * GIB));
        assert_eq!(parse_size("1mb"), Ok(1_000_000));
        assert_eq!(parse_size(" 2 GB "), Ok(2_000_000_000));
        assert_eq!(parse_size("1.5 KiB"), Ok(1536));
    }

    #[test]
    fn decimals_are_exact_and_round_down_to_a_byte() {
        assert_eq!(parse_size("1.5MB"), Ok(1_500_000));
        assert_eq!(parse_size("1.1MB"), Ok(1_100_000), "a float gives 1099999");
        assert_eq!(parse_size("0.1GB"), Ok(100_000_000));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert_eq!(parse_size("0.5G"), Ok(GIB / 2));
        assert_eq!(parse_size("1.0010"), Ok(1), "trailing zeros do not count as places");
        assert_eq!(parse_size("0.0001K"), Ok(0), "fractions of a byte round down");
        assert_eq!(parse_size("1.9999B"), Ok(1));
        assert_eq!(parse_size("0.999999999999999999999999T"), Ok(TIB - 1));
    }

    #[test]
    fn bad_sizes_name_the_input_the_problem_and_the_expected_form() {
        for (input, problem) in [
            ("", "empty"),
            ("   ", "empty"),
            ("KB", "no number"),
            ("-5KB", "no number"),
            ("abc", "no number"),
            (".", "malformed number"),
            (".5K", "malformed number"),
            ("5.K", "malformed number"),
            ("1.2.3MB", "malformed number"),
            ("10 parsecs", "unknown unit `parsecs`"),
            ("1e3", "unknown unit `e3`"),
            ("5PB", "unknown unit `PB`"),
            ("99999999999999999999GB", "too large"),
            ("18446744073709551616", "too large"),
            ("99999999999999999999999999999999999999999", "too large"),
            ("16777216T", "too large"),
            ("340282366920938463463374607431768211.9kB", "too large"),
            ("1.0000000000000000000000001", "more than 24 decimal places"),
        ] {
            let e = parse_size(input).unwrap_err().to_string();
            assert!(e.starts_with(&format!("size `{input}`: {problem};")), "{input:?}: {e}");
            assert!(e.contains("e.g. 1024, 500M, 10GiB or 1.5GB"), "{e}");
        }
    }

    #[test]
    fn formatting_uses_binary_units_with_one_decimal() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.0 KiB");
        assert_eq!(format_size(1536), "1.5 KiB");
        assert_eq!(format_size(251_187), "245.3 KiB");
        assert_eq!(format_size(3 * MIB + 512 * KIB), "3.5 MiB");
        assert_eq!(format_size(10 * GIB), "10.0 GiB");
        assert_eq!(format_size(2048 * TIB), "2048.0 TiB", "TiB is the largest unit");
        assert_eq!(format_size(u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn formatting_never_prints_1024_of_a_unit() {
        assert_eq!(format_size(MIB - 1), "1.0 MiB");
        assert_eq!(
            format_size(MIB - 51),
            "1.0 MiB",
            "1023.95 KiB would print as 1024.0 KiB"
        );
        assert_eq!(format_size(MIB - 52), "1023.9 KiB");
        assert_eq!(format_size(GIB - 1), "1.0 GiB");
    }

    #[test]
    fn what_is_printed_reads_back_within_the_rounding() {
        for bytes in [0, 1, 1023, 1024, 1536, 251_187, 3 * MIB + 512 * KIB, 7 * GIB + 12345] {
            let back = parse_size(&format_size(bytes)).unwrap();
            let unit = if bytes < KIB { 1 } else { bytes.ilog(1024) };
            let tolerance = if bytes < KIB { 0 } else { 1024u64.pow(unit) / 20 + 1 };
            assert!(
                back.abs_diff(bytes) <= tolerance,
                "{bytes} -> {} -> {back}",
                format_size(bytes)
            );
        }
    }
}
