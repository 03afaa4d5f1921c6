//! Keywords as Gnutella servents see them (PROTOCOL.md §6): names split at anything that is not
//! a letter or digit, lower-cased, accents removed, so "Café-Déjà Vu.MP3" and "cafe deja vu mp3"
//! are the same words.

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Lower-case, accent-free form of `s`.
pub fn normalize(s: &str) -> String {
    s.nfd()
        .filter(|c| !is_combining_mark(*c))
        .flat_map(char::to_lowercase)
        .collect()
}

/// The keywords of `s`, normalised, in order, empty ones dropped.
pub fn words(s: &str) -> Vec<String> {
    normalize(s)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The words to put in a QRP table for a name: each word, and, like gtk-gnutella, its prefixes
/// down to 4 characters for words of 5 or more, so a query for "gnut" can find "gnutella"
/// (PROTOCOL.md §6 and §12).
pub fn qrp_words(name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in words(name) {
        let chars: Vec<char> = w.chars().collect();
        if chars.len() >= 5 {
            for n in 4..chars.len() {
                out.push(chars[..n].iter().collect());
            }
        }
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_accents_and_punctuation_do_not_matter() {
        assert_eq!(words("Café-Déjà Vu.MP3"), vec!["cafe", "deja", "vu", "mp3"]);
        assert_eq!(words("  __ "), Vec::<String>::new());
        assert_eq!(
            words("naïve_Ünïcödé(2).ogg"),
            vec!["naive", "unicode", "2", "ogg"]
        );
    }

    #[test]
    fn qrp_words_add_prefixes_of_long_words() {
        let w = qrp_words("gnutella.pdf");
        assert!(w.contains(&"gnut".to_string()));
        assert!(w.contains(&"gnutell".to_string()));
        assert!(w.contains(&"gnutella".to_string()));
        assert!(w.contains(&"pdf".to_string()));
        assert!(!w.contains(&"gnu".to_string()));
    }
}
