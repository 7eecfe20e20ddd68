//! Ordering kernel version strings the way dpkg orders package versions.
//!
//! Kernel versions in file names (`6.1.0-28-amd64`, `5.14.0-362.8.1.el9_3.x86_64`,
//! `4.19.0-27-686-pae`) are compared with dpkg's `verrevcmp` rule (deb-version(7)): the
//! string is split into alternating non-digit and digit runs; non-digit runs compare
//! character by character with `~` before everything (even the end of the string) and
//! letters before other characters; digit runs compare as numbers. So `6.1.0-28` is newer
//! than `6.1.0-9`, and `6.1.0-rc1`'s `~` form (`6.1.0~rc1`) is older than `6.1.0`.

use std::cmp::Ordering;

/// Weight of one character of a non-digit run (dpkg's `order()`): `~` sorts first, then
/// the end of the string, then letters, then everything else.
fn weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// Compare two version strings (see the module documentation).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0usize, 0usize);
    while i < a.len() || j < b.len() {
        // Non-digit run.
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let wa = weight(a.get(i).copied().filter(|c| !c.is_ascii_digit()));
            let wb = weight(b.get(j).copied().filter(|c| !c.is_ascii_digit()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            if i < a.len() && !a[i].is_ascii_digit() {
                i += 1;
            }
            if j < b.len() && !b[j].is_ascii_digit() {
                j += 1;
            }
        }
        // Digit run: numeric comparison without parsing (no overflow on long runs).
        while i < a.len() && a[i] == b'0' {
            i += 1;
        }
        while j < b.len() && b[j] == b'0' {
            j += 1;
        }
        let si = i;
        let sj = j;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let (da, db) = (&a[si..i], &b[sj..j]);
        let by_len = da.len().cmp(&db.len());
        if by_len != Ordering::Equal {
            return by_len;
        }
        let by_digits = da.cmp(db);
        if by_digits != Ordering::Equal {
            return by_digits;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;
    use Ordering::*;

    #[test]
    fn numeric_components_compare_as_numbers() {
        assert_eq!(compare_versions("6.1.0-28-amd64", "6.1.0-9-amd64"), Greater);
        assert_eq!(compare_versions("6.1.0-9-amd64", "6.1.0-28-amd64"), Less);
        assert_eq!(compare_versions("6.10.0", "6.9.12"), Greater);
        assert_eq!(compare_versions("5.10.0-0", "5.10.0-00"), Equal);
        assert_eq!(compare_versions("6.1.0-28-amd64", "6.1.0-28-amd64"), Equal);
        assert_eq!(
            compare_versions("123456789012345678901234567890", "99"),
            Greater,
            "long digit runs do not overflow"
        );
    }

    #[test]
    fn tilde_sorts_before_the_end_and_letters_before_punctuation() {
        assert_eq!(compare_versions("6.1.0~rc1", "6.1.0"), Less);
        assert_eq!(compare_versions("6.1.0", "6.1.0-1"), Less);
        assert_eq!(compare_versions("6.1a", "6.1-"), Less, "letters before '-'");
        assert_eq!(
            compare_versions("6.1.0-28-amd64", "6.1.0-28-cloud-amd64"),
            Less
        );
    }

    #[test]
    fn sorting_puts_the_newest_last() {
        let mut v = vec![
            "6.1.0-28-amd64",
            "5.10.0-33-amd64",
            "6.1.0-9-amd64",
            "6.1.0-10-amd64",
            "4.19.0-27-amd64",
        ];
        v.sort_by(|a, b| compare_versions(a, b));
        assert_eq!(
            v,
            [
                "4.19.0-27-amd64",
                "5.10.0-33-amd64",
                "6.1.0-9-amd64",
                "6.1.0-10-amd64",
                "6.1.0-28-amd64"
            ]
        );
    }
}
