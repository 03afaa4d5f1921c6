//! Words for people: sizes in one unit system (decimal, as disks and networks count) and
//! counts with their plural, for the CLI, the log and the page alike.

/// `1.5 MB`: decimal units, one decimal past bytes.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// `1 file`, `2 files`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `a leaf`, `an ultrapeer`.
pub fn a(word: &str) -> String {
    let vowel = word
        .chars()
        .next()
        .is_some_and(|c| "aeiouAEIOU".contains(c));
    format!("{} {word}", if vowel { "an" } else { "a" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_counts_and_articles_read_right() {
        assert_eq!(human(999), "999 B");
        assert_eq!(human(1_500_000), "1.5 MB");
        assert_eq!(human(2_100_000_000), "2.1 GB");
        assert_eq!(count(1, "file", "files"), "1 file");
        assert_eq!(count(0, "source", "sources"), "0 sources");
        assert_eq!(a("ultrapeer"), "an ultrapeer");
        assert_eq!(a("leaf"), "a leaf");
    }
}
