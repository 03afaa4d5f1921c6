//! `urn:sha1:` identifiers (HUGE, PROTOCOL.md §3): the SHA-1 of a whole file in RFC 3548 base32,
//! accepted in any case and written in upper case.

use std::fmt;
use std::str::FromStr;

use data_encoding::BASE32_NOPAD;
use serde::{Serialize, Serializer};

const PREFIX: &str = "urn:sha1:";
const BITPRINT: &str = "urn:bitprint:";

/// The SHA-1 of a whole file.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha1Urn(pub [u8; 20]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a urn:sha1 (expected urn:sha1: and 32 base32 characters)")]
pub struct BadUrn;

impl Sha1Urn {
    pub fn digest(bytes: &[u8]) -> Self {
        use sha1::Digest;
        Sha1Urn(sha1::Sha1::digest(bytes).into())
    }

    /// Parses the 32 base32 characters that follow `urn:sha1:`.
    pub fn from_base32(s: &[u8]) -> Result<Self, BadUrn> {
        if s.len() != 32 {
            return Err(BadUrn);
        }
        let mut upper = [0u8; 32];
        for (u, c) in upper.iter_mut().zip(s) {
            *u = c.to_ascii_uppercase();
        }
        let mut out = [0u8; 20];
        BASE32_NOPAD
            .decode_mut(&upper, &mut out)
            .map_err(|_| BadUrn)?;
        Ok(Sha1Urn(out))
    }

    /// Parses `urn:sha1:<32>` or `urn:bitprint:<32>.<39>` (which starts with the SHA-1), any
    /// case.
    pub fn parse(s: &[u8]) -> Result<Self, BadUrn> {
        let lower_prefix =
            |p: &str| s.len() >= p.len() && s[..p.len()].eq_ignore_ascii_case(p.as_bytes());
        if lower_prefix(PREFIX) {
            Self::from_base32(&s[PREFIX.len()..])
        } else if lower_prefix(BITPRINT) && s.len() == BITPRINT.len() + 32 + 1 + 39 {
            Self::from_base32(&s[BITPRINT.len()..BITPRINT.len() + 32])
        } else {
            Err(BadUrn)
        }
    }

    pub fn base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }
}

impl FromStr for Sha1Urn {
    type Err = BadUrn;

    fn from_str(s: &str) -> Result<Self, BadUrn> {
        Self::parse(s.as_bytes())
    }
}

impl fmt::Display for Sha1Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{}", self.base32())
    }
}

impl fmt::Debug for Sha1Urn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Sha1Urn {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Sha1Urn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_and_abc_match_the_reference_urns() {
        assert_eq!(
            Sha1Urn::digest(b"").to_string(),
            "urn:sha1:3I42H3S6NNFQ2MSVX7XZKYAYSCX5QBYJ"
        );
        assert_eq!(
            Sha1Urn::digest(b"abc").to_string(),
            "urn:sha1:VGMT4NSHA2AWVOR6EVYXQUGCNSONBWE5"
        );
    }

    #[test]
    fn base32_is_msb_first_rfc3548() {
        assert_eq!(BASE32_NOPAD.encode(&[0x0f, 0xf5]), "B72Q");
    }

    #[test]
    fn any_case_and_bitprint_parse_to_the_same_sha1() {
        let u = Sha1Urn::digest(b"abc");
        assert_eq!("URN:SHA1:vgmt4nsha2awvor6evyxqugcnsonbwe5".parse(), Ok(u));
        let bp = format!("urn:bitprint:{}.{}", u.base32(), "A".repeat(39));
        assert_eq!(bp.parse(), Ok(u));
        assert_eq!("urn:sha1:VGMT".parse::<Sha1Urn>(), Err(BadUrn));
        assert_eq!(
            "urn:sha1:1GMT4NSHA2AWVOR6EVYXQUGCNSONBWE5".parse::<Sha1Urn>(),
            Err(BadUrn)
        );
    }
}
