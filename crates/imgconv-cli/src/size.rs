//! Parsing and printing byte sizes: `512M`, `2G`, `1.5GiB`, `4096`.
//!
//! Suffixes are binary (K = KiB = 1024), as `truncate`, `qemu-img` and `fallocate` read
//! them; an optional `B` or `iB` is accepted. Fractions are allowed when the result is a
//! whole number of bytes (`1.5G` yes, `0.3B` no).

/// Parse a size for clap (`value_parser = parse_size`).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty size".into());
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "unknown size unit {unit:?} in {text:?} (use bytes or K, M, G, T, e.g. 512M, 2G, 1.5GiB)"
            ))
        }
    };
    let bad = || format!("{text:?} is not a size (e.g. 512M, 2G, 1.5GiB, 4096)");
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if whole.is_empty() && frac.is_empty() || frac.contains('.') {
        return Err(bad());
    }
    let unit_bytes = 1u128 << shift;
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    // Exact decimal arithmetic: value = (whole + frac / 10^len) * unit.
    let frac_digits = frac.len() as u32;
    if frac_digits > 18 {
        return Err(bad());
    }
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(frac_digits);
    let numerator = whole
        .checked_mul(scale)
        .and_then(|w| w.checked_add(frac_val))
        .and_then(|n| n.checked_mul(unit_bytes))
        .ok_or_else(|| format!("{text:?} is too large"))?;
    if numerator % scale != 0 {
        return Err(format!("{text:?} is not a whole number of bytes"));
    }
    u64::try_from(numerator / scale).map_err(|_| format!("{text:?} is too large"))
}

/// Print a byte count the way people read it: `512 MiB`, `1.5 GiB`, `300 B`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else if (value - value.round()).abs() < 0.05 {
        format!("{:.0} {}", value.round(), UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_bytes_and_binary_suffixes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2gb"), Ok(2 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("0.5K"), Ok(512));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("10B"), Ok(10));
    }

    #[test]
    fn rejects_garbage_fractions_of_bytes_and_overflow() {
        assert!(parse_size("").is_err());
        assert!(parse_size("M").is_err());
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("1.2.3G").is_err());
        assert!(parse_size("1.5").is_err(), "1.5 bytes is not whole");
        assert!(parse_size("-1G").is_err());
        assert!(parse_size("99999999999T").is_err());
        assert!(parse_size("18446744073709551616").is_err());
    }

    #[test]
    fn prints_human_sizes() {
        assert_eq!(human(300), "300 B");
        assert_eq!(human(512 << 20), "512 MiB");
        assert_eq!(human(3 << 29), "1.5 GiB");
        assert_eq!(human(450 << 20), "450 MiB");
    }
}
