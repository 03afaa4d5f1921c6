//! Alternate locations on the wire (SWARM.md §2.1): the compact `X-Alt` / `X-Nalt` lists of
//! `ip[:port]`, the firewalled `X-Falt` entries (`guid;port:ip;proxy ip:port…`), and the legacy
//! full-URL form (`Alternate-Location`, and Shareaza's URLs inside `X-Alt`). Parsers accept
//! what gtk-gnutella's `dmesh.c` accepts, skip what it skips, never panic, and allocate at most
//! [`MAX_ALTS_PARSED`] entries; formatters write what gtkg writes, within a byte budget, and
//! never fold.
//!
//! Every address here is IPv4: IPv6 tokens are skipped like any other unusable token.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{header_line_len, is_blank, starts_with_ci, trim_blanks};
use crate::wire::ServentId;

/// The Gnutella port, left out of compact `X-Alt` entries (gtkg `GTA_PORT`).
pub const GTA_PORT: u16 = 6346;

/// Default port of a legacy `http://` URL without one (gtkg `HTTP_PORT`, via `http_url_parse`).
pub const HTTP_PORT: u16 = 80;

/// Most push proxies kept and written per firewalled entry (gtkg `dmesh.c FW_MAX_PROXIES`).
pub const FW_MAX_PROXIES: usize = 4;

/// Most entries kept from one header value (ours). gtkg keeps all of them, but its budgets
/// (1024 B per request, 3072 B per reply, SWARM.md §2.2) hold at most ~130 compact entries; 100
/// is plenty for a mesh of 256 per file and bounds what one header can make us store.
pub const MAX_ALTS_PARSED: usize = 100;

/// Longest alt-loc header value we parse (16 KiB, ours): five times gtkg's largest reply header
/// (3072 B, `http.c`). Longer values are refused whole, before any work.
pub const MAX_ALT_VALUE_LEN: usize = 16 * 1024;

/// Header name of the compact list of good sources.
pub const X_ALT: &str = "X-Alt";
/// Header name of the compact list of sources known to be bad.
pub const X_NALT: &str = "X-Nalt";
/// Header name of the list of firewalled sources (sent only to peers with `fwalt` in
/// `X-Features`, SWARM.md §8.12).
pub const X_FALT: &str = "X-Falt";

/// A directly connectable source of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AltLoc {
    /// Its listening address.
    pub addr: SocketAddrV4,
    /// Whether it accepts TLS, from the `tls=<hex>` bitmap that may start an `X-Alt`
    /// (gtkg sends `tls=8` before its own address, SWARM.md §2.2).
    pub tls: bool,
}

impl AltLoc {
    /// A source without TLS.
    pub fn new(addr: SocketAddrV4) -> Self {
        Self { addr, tls: false }
    }
}

/// A legacy URL alt-loc with the time written after it, if any could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatedAltLoc {
    /// The source.
    pub loc: AltLoc,
    /// The time after the URL, as seconds since the UNIX epoch (UTC). gtkg adds the entry with
    /// that time and drops it when it is older than the mesh lifetime (SWARM.md §2.3).
    pub unix_time: Option<u64>,
}

/// A firewalled source: reachable only by Push, through its proxies (`X-Falt`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FwAltLoc {
    /// The servent's GUID, the target of the Push.
    pub guid: ServentId,
    /// Its own address when known (written `port:IP` in `X-Falt`); gtkg reads and drops it.
    pub addr: Option<SocketAddrV4>,
    /// Its push proxies, distinct, at most [`FW_MAX_PROXIES`].
    proxies: Vec<SocketAddrV4>,
    /// Whether the servent accepts TLS. `X-Falt` carries no such mark (LimeWire's `pptls=` is
    /// about the proxies, and gtkg skips it), so parsers leave it false and the caller sets it
    /// from what it learnt elsewhere (e.g. the servent's `X-Features`).
    pub tls: bool,
}

impl FwAltLoc {
    /// A firewalled source with no known address nor proxy.
    pub fn new(guid: ServentId) -> Self {
        Self {
            guid,
            addr: None,
            proxies: Vec::new(),
            tls: false,
        }
    }

    /// The push proxies, in the order received.
    pub fn proxies(&self) -> &[SocketAddrV4] {
        &self.proxies
    }

    /// Adds a proxy unless it is already listed or [`FW_MAX_PROXIES`] are. Returns whether it
    /// was added.
    pub fn push_proxy(&mut self, proxy: SocketAddrV4) -> bool {
        if self.proxies.len() >= FW_MAX_PROXIES || self.proxies.contains(&proxy) {
            return false;
        }
        self.proxies.push(proxy);
        true
    }

    /// Replaces the proxy list (a received list supersedes the old one, SWARM.md §8.14),
    /// keeping the first [`FW_MAX_PROXIES`] distinct ones.
    pub fn set_proxies(&mut self, proxies: impl IntoIterator<Item = SocketAddrV4>) {
        self.proxies.clear();
        for p in proxies {
            if self.proxies.len() >= FW_MAX_PROXIES {
                break;
            }
            self.push_proxy(p);
        }
    }
}

/// Why an alt-loc header value was refused. Unusable tokens inside a value are skipped, as
/// gtkg skips them, and are not errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AltError {
    /// The value is longer than [`MAX_ALT_VALUE_LEN`].
    #[error("value is {len} bytes, more than {max}")]
    TooLong {
        /// Length of the value.
        len: usize,
        /// The bound.
        max: usize,
    },
}

impl AltError {
    /// Stable identifier of the variant, for logs, counters and conformance files.
    pub fn code(&self) -> &'static str {
        match self {
            AltError::TooLong { .. } => "too_long",
        }
    }
}

/// Whether an address can be a host at all: not `0.0.0.0/8` ("this network"), multicast
/// (`224/4`), reserved (`240/4`) or broadcast. Entries failing this are dropped by every parser
/// and formatter's caller alike (gtkg `host_addr.c ipv4_addr_is_routable`, first two rows).
pub fn is_routable(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    o[0] != 0 && o[0] < 224
}

/// Whether an address is reachable from the Internet: routable, and neither private (10/8,
/// 172.16/12, 192.168/16, 169.254/16, gtkg `is_private_addr`), loopback (127/8) nor a test or
/// relay network (192.0.2/24, 192.88.99/24, 198.18/15, gtkg `ipv4_addr_is_routable`).
///
/// Parsers keep private and loopback alt-locs (only `X-Falt` proxies are filtered) so that the
/// caller decides, e.g. from an `allow_private` setting on a test network.
pub fn is_public(ip: Ipv4Addr) -> bool {
    let o = ip.octets();
    is_routable(ip)
        && o[0] != 10
        && o[0] != 127
        && !(o[0] == 172 && (o[1] & 0xf0) == 16)
        && !(o[0] == 192 && o[1] == 168)
        && !(o[0] == 169 && o[1] == 254)
        && !(o[0] == 192 && o[1] == 0 && o[2] == 2)
        && !(o[0] == 192 && o[1] == 88 && o[2] == 99)
        && !(o[0] == 198 && (o[1] & 0xfe) == 18)
}

fn check_len(value: &str) -> Result<(), AltError> {
    if value.len() > MAX_ALT_VALUE_LEN {
        return Err(AltError::TooLong {
            len: value.len(),
            max: MAX_ALT_VALUE_LEN,
        });
    }
    Ok(())
}

/// Parses an `X-Alt` value. Like gtkg (`huge.c huge_is_pure_xalt`), a value that starts with
/// `tls=` or an address, or that holds no `http://`, is read as the compact list (see
/// [`parse_x_nalt`] for its rules); anything else is Shareaza's full URLs in `X-Alt`, read as
/// the legacy form ([`parse_alternate_location`]).
pub fn parse_x_alt(value: &str) -> Result<Vec<AltLoc>, AltError> {
    parse_x_alt_for(value, None)
}

/// [`parse_x_alt`], dropping legacy URLs whose `urn:sha1:` is not `sha1_base32` (the file the
/// header came with; gtkg skips such mismatches). Compact entries carry no URN.
pub fn parse_x_alt_for(value: &str, sha1_base32: Option<&str>) -> Result<Vec<AltLoc>, AltError> {
    check_len(value)?;
    let v = trim_blanks(value);
    let compact = starts_with_ci(v, "tls=")
        || parse_ipv4(v.as_bytes(), 0).is_some()
        || !contains_ci(v, "http://");
    if compact {
        Ok(parse_compact(v))
    } else {
        Ok(parse_legacy(v, sha1_base32)
            .into_iter()
            .map(|d| d.loc)
            .collect())
    }
}

/// Parses an `X-Nalt` value: the compact list only, as gtkg does
/// (`dmesh.c dmesh_parse_addr_port_list`).
///
/// Tokens are split on `,` or `;`; blanks (including CR/LF/TAB) are skipped. The first token
/// starting `tls=` is a bitmap, hex digits MSB first, marking which following entries speak
/// TLS (`tls=8`: the first; gtkg skips it undecoded). `ip` alone means port 6346; a port of 0
/// or an unusable token (garbage, IPv6, URL) is skipped; unroutable addresses are dropped.
/// At most [`MAX_ALTS_PARSED`] entries are kept.
pub fn parse_x_nalt(value: &str) -> Result<Vec<AltLoc>, AltError> {
    check_len(value)?;
    Ok(parse_compact(value))
}

fn parse_compact(value: &str) -> Vec<AltLoc> {
    let mut out: Vec<AltLoc> = Vec::new();
    let mut tls_map: Option<&str> = None;
    let mut index = 0usize;
    for token in value.split([',', ';']) {
        let tok = trim_blanks(token);
        if tok.is_empty() {
            continue;
        }
        if tls_map.is_none() && starts_with_ci(tok, "tls=") {
            // A bitmap with a non-hex digit tells nothing: keep it as empty.
            let hex = &tok[4..];
            tls_map = Some(if hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                hex
            } else {
                ""
            });
            continue;
        }
        let i = index;
        index += 1;
        let Some(addr) = parse_compact_entry(tok) else {
            continue;
        };
        if out.iter().any(|a| a.addr == addr) {
            continue;
        }
        out.push(AltLoc {
            addr,
            tls: tls_map.is_some_and(|m| tls_bit(m, i)),
        });
        if out.len() >= MAX_ALTS_PARSED {
            break;
        }
    }
    out
}

/// `ip[:port]` with a usable address; text after a valid `ip:port` that starts with a blank
/// is ignored (gtkg reads the number and stops).
fn parse_compact_entry(tok: &str) -> Option<SocketAddrV4> {
    let b = tok.as_bytes();
    let (ip, p) = parse_ipv4(b, 0)?;
    let port = match b.get(p) {
        None => GTA_PORT,
        Some(b':') => {
            let (port, q) = parse_port(b, p + 1)?;
            if q < b.len() && !is_blank(b[q]) {
                return None;
            }
            port
        }
        Some(&c) if is_blank(c) => GTA_PORT,
        Some(_) => return None,
    };
    is_routable(ip).then_some(SocketAddrV4::new(ip, port))
}

/// Bit `i` of a hex bitmap, MSB first: `8` marks entry 0, `E` entries 0–2, `08` entry 4.
fn tls_bit(hex: &str, i: usize) -> bool {
    hex.as_bytes()
        .get(i / 4)
        .and_then(|&c| (c as char).to_digit(16))
        .is_some_and(|d| d & (8 >> (i % 4)) != 0)
}

/// The hex bitmap for `flags` (MSB first), trailing zero digits dropped; empty when none set.
fn tls_bitmap(flags: impl Iterator<Item = bool>) -> String {
    let mut digits: Vec<u8> = Vec::new();
    for (i, f) in flags.enumerate() {
        if i % 4 == 0 {
            digits.push(0);
        }
        if f {
            // A digit was pushed when i % 4 == 0, so the vector is not empty.
            if let Some(d) = digits.last_mut() {
                *d |= 8 >> (i % 4);
            }
        }
    }
    while digits.last() == Some(&0) {
        digits.pop();
    }
    digits
        .into_iter()
        .map(|d| char::from_digit(u32::from(d), 16).map_or('0', |c| c.to_ascii_uppercase()))
        .collect()
}

/// Parses a legacy alt-loc value (`X-Gnutella-Alternate-Location`, `Alternate-Location`,
/// `Alt-Location`, or Shareaza's `X-Alt`) as gtkg's `dmesh.c dmesh_collect_locations` does:
/// full URLs, each optionally followed by a time (ISO 8601, or RFC 1123 whose comma is not a
/// separator), separated by `,` — or by nothing before the next `http://` (LimeWire) —
/// possibly within double quotes. Only `http://<IPv4>[:port]/uri-res/N2R?urn:sha1:<b32>` (or
/// `urn:bitprint:`) entries are kept: `/get/` URLs and host names are dropped (we never resolve
/// names found in headers), and so are URNs other than `sha1_base32` when it is given. At most
/// [`MAX_ALTS_PARSED`] entries.
pub fn parse_alternate_location(
    value: &str,
    sha1_base32: Option<&str>,
) -> Result<Vec<DatedAltLoc>, AltError> {
    check_len(value)?;
    Ok(parse_legacy(value, sha1_base32))
}

fn parse_legacy(value: &str, sha1_base32: Option<&str>) -> Vec<DatedAltLoc> {
    let b = value.as_bytes();
    let n = b.len();
    let at = |i: usize| -> u8 { b.get(i).copied().unwrap_or(0) };
    let is_http_at = |i: usize| {
        b.get(i..i + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"http://"))
    };
    // Slices between arbitrary byte offsets; anything that is not UTF-8 there is not ASCII,
    // hence neither a usable URL nor a date.
    let text = |from: usize, to: usize| std::str::from_utf8(&b[from..to]).ok();
    let mut out: Vec<DatedAltLoc> = Vec::new();
    let mut p = 0usize;
    loop {
        while p < n && is_blank(b[p]) {
            p += 1;
        }
        if p >= n || out.len() >= MAX_ALTS_PARSED {
            break;
        }
        let entry_start = p;
        // The URL runs to the next blank or `,` (a `,` not followed by a blank or `http://` is
        // part of the URL); quoted text is one token.
        let url_start = p;
        let mut in_quote = false;
        while p < n {
            let c = b[p];
            if c == b'"' {
                in_quote = !in_quote;
                if !in_quote {
                    break;
                }
            }
            if in_quote {
                p += 1;
                continue;
            }
            if c == b',' {
                if is_http_at(p + 1) {
                    break;
                }
                if !is_blank(at(p + 1)) && p + 1 < n {
                    p += 1;
                    continue;
                }
            }
            if is_blank(c) || c == b',' {
                break;
            }
            p += 1;
        }
        let parsed = text(url_start, p)
            .and_then(|url| parse_legacy_url(url.strip_prefix('"').unwrap_or(url), sha1_base32));
        if at(p) == b'"' {
            p += 1;
        }
        let mut stamp = None;
        if at(p) == b',' {
            p += 1;
        } else {
            if p < n {
                p += 1;
            }
            let date_start = p;
            loop {
                while p < n && b[p] != b',' && !is_http_at(p) {
                    p += 1;
                }
                // "Mon, 17 Jun 2002 07:53:14 +0200": a 3-letter day is not an entry's end.
                if at(p) == b',' && p - date_start == 3 {
                    p += 1;
                    continue;
                }
                break;
            }
            if parsed.is_some() {
                stamp = text(date_start, p).and_then(parse_date);
            }
            if at(p) == b',' {
                p += 1;
            }
        }
        if let Some(addr) = parsed
            && !out.iter().any(|d| d.loc.addr == addr)
        {
            out.push(DatedAltLoc {
                loc: AltLoc::new(addr),
                unix_time: stamp,
            });
        }
        if p == entry_start {
            p += 1; // cannot happen with the rules above; guarantees progress anyway
        }
    }
    out
}

/// `http://<IPv4>[:port]/uri-res/N2R?urn:sha1:<32 base32>` (or `urn:bitprint:<32>.<39>`).
fn parse_legacy_url(url: &str, sha1_base32: Option<&str>) -> Option<SocketAddrV4> {
    if !starts_with_ci(url, "http://") {
        return None;
    }
    let rest = &url["http://".len()..];
    let b = rest.as_bytes();
    let (ip, mut p) = parse_ipv4(b, 0)?;
    let port = if b.get(p) == Some(&b':') {
        let (port, q) = parse_port(b, p + 1)?;
        p = q;
        port
    } else {
        HTTP_PORT
    };
    let path = &rest[p..];
    const N2R: &str = "/uri-res/N2R?";
    if !starts_with_ci(path, N2R) {
        return None; // `/get/<i>/<name>` and anything else: not kept (SWARM.md §2.1)
    }
    let urn = &path[N2R.len()..];
    let sha1 = if starts_with_ci(urn, "urn:sha1:") {
        &urn["urn:sha1:".len()..]
    } else if starts_with_ci(urn, "urn:bitprint:") {
        &urn["urn:bitprint:".len()..]
    } else {
        return None;
    };
    let digest = sha1.get(..32)?;
    if !digest
        .bytes()
        .all(|c| matches!(c, b'A'..=b'Z' | b'a'..=b'z' | b'2'..=b'7'))
    {
        return None;
    }
    if sha1_base32.is_some_and(|want| !want.eq_ignore_ascii_case(digest)) {
        return None;
    }
    is_routable(ip).then_some(SocketAddrV4::new(ip, port))
}

/// Writes an `X-Alt` value as gtkg does (`dmesh.c dmesh_alternate_location`): `ip[:port]`
/// entries, the port left out when it is 6346, separated by `", "`, never folded, and a
/// `tls=<hex>` bitmap first when any written entry speaks TLS. Entries are taken in the order
/// given; one that would push the header line (`X-Alt: …\r\n`) over `budget_bytes` is skipped
/// and later, shorter ones are still tried, as gtkg does. Empty when nothing fits: send no
/// header then.
pub fn format_x_alt(locs: &[AltLoc], budget_bytes: usize) -> String {
    let mut chosen: Vec<&AltLoc> = Vec::new();
    let mut entries_len = 0usize;
    let mut last_tls: Option<usize> = None;
    for loc in locs {
        if chosen.iter().any(|c| c.addr == loc.addr) {
            continue;
        }
        let len = compact_len(loc.addr);
        let i = chosen.len();
        let new_entries = entries_len + if i == 0 { len } else { 2 + len };
        let new_last_tls = if loc.tls { Some(i) } else { last_tls };
        let bitmap = new_last_tls.map_or(0, |t| "tls=".len() + t / 4 + 1 + 2);
        if header_line_len(X_ALT, bitmap + new_entries) <= budget_bytes {
            chosen.push(loc);
            entries_len = new_entries;
            last_tls = new_last_tls;
        }
    }
    let mut s = String::with_capacity(entries_len + 16);
    if last_tls.is_some() {
        s.push_str("tls=");
        s.push_str(&tls_bitmap(chosen.iter().map(|c| c.tls)));
        s.push_str(", ");
    }
    for (i, c) in chosen.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        if c.addr.port() == GTA_PORT {
            s.push_str(&c.addr.ip().to_string());
        } else {
            s.push_str(&c.addr.to_string());
        }
    }
    s
}

fn compact_len(addr: SocketAddrV4) -> usize {
    let ip = addr.ip().to_string().len();
    if addr.port() == GTA_PORT {
        ip
    } else {
        ip + 1 + addr.port().to_string().len()
    }
}

/// Writes an `X-Nalt` value as gtkg does: `ip:port` always with the port, `", "` between,
/// stopping at the first entry that would push the line over `budget_bytes` (gtkg gives
/// `X-Nalt` at most a third of the mesh budget; that split is the caller's).
pub fn format_x_nalt(addrs: &[SocketAddrV4], budget_bytes: usize) -> String {
    let mut s = String::new();
    for a in addrs {
        let text = a.to_string();
        let sep = if s.is_empty() { 0 } else { 2 };
        if header_line_len(X_NALT, s.len() + sep + text.len()) > budget_bytes {
            break;
        }
        if sep > 0 {
            s.push_str(", ");
        }
        s.push_str(&text);
    }
    s
}

/// Writes an `X-Falt` value as gtkg does (`dmesh.c dmesh_fwalt_string`): per entry the GUID as
/// 32 lowercase hex digits, then `;port:IP` for the servent itself when known, then `;ip:port`
/// for each proxy (at most [`FW_MAX_PROXIES`]); entries separated by `", "`, never folded. An
/// entry that does not fit in `budget_bytes` is skipped and later ones still tried.
pub fn format_x_falt(locs: &[FwAltLoc], budget_bytes: usize) -> String {
    let mut s = String::new();
    for loc in locs {
        let mut e = loc.guid.to_hex();
        if let Some(a) = loc.addr {
            e.push_str(&format!(";{}:{}", a.port(), a.ip()));
        }
        for p in loc.proxies.iter().take(FW_MAX_PROXIES) {
            e.push(';');
            e.push_str(&p.to_string());
        }
        let sep = if s.is_empty() { 0 } else { 2 };
        if header_line_len(X_FALT, s.len() + sep + e.len()) > budget_bytes {
            continue;
        }
        if sep > 0 {
            s.push_str(", ");
        }
        s.push_str(&e);
    }
    s
}

/// Parses an `X-Falt` value as gtkg does (`dmesh.c dmesh_collect_fw_host`). Entries are split
/// on `,`, their items on `;`, blanks trimmed. Per entry: the GUID comes first and is required
/// (its first 32 characters, hex, any case; an entry without it is skipped); then items
/// containing `/` (options such as `fwt/1`) are skipped, the first `pptls=<hex>` is skipped,
/// `port:IP` items before the first proxy give the servent's own address (the first one is
/// kept), an ISO timestamp ends the entry, and `ip:port` items are push proxies: unroutable ones
/// and port 0 dropped, private and loopback ones dropped unless `allow_private`, duplicates
/// dropped, at most [`FW_MAX_PROXIES`] kept. At most [`MAX_ALTS_PARSED`] entries, one per GUID.
pub fn parse_x_falt(value: &str, allow_private: bool) -> Result<Vec<FwAltLoc>, AltError> {
    check_len(value)?;
    let mut out: Vec<FwAltLoc> = Vec::new();
    for entry in value.split(',') {
        if out.len() >= MAX_ALTS_PARSED {
            break;
        }
        let Some(loc) = parse_fw_entry(entry, allow_private) else {
            continue;
        };
        if !out.iter().any(|o| o.guid == loc.guid) {
            out.push(loc);
        }
    }
    Ok(out)
}

fn parse_fw_entry(entry: &str, allow_private: bool) -> Option<FwAltLoc> {
    let mut items = entry.split(';').map(trim_blanks);
    let first = items.next()?;
    let guid = ServentId::from_hex(first.get(..32)?)?;
    let mut loc = FwAltLoc::new(guid);
    let (mut seen_proxy, mut seen_pptls) = (false, false);
    for tok in items {
        if tok.is_empty() || tok.contains('/') {
            continue;
        }
        if !seen_pptls && starts_with_ci(tok, "pptls=") {
            seen_pptls = true;
            continue;
        }
        if !seen_proxy && let Some(addr) = parse_port_ip(tok) {
            if loc.addr.is_none() && is_routable(*addr.ip()) {
                loc.addr = Some(addr);
            }
            continue;
        }
        if parse_iso8601(tok).is_some() {
            break;
        }
        let b = tok.as_bytes();
        let Some((ip, p)) = parse_ipv4(b, 0) else {
            continue;
        };
        if b.get(p) != Some(&b':') {
            continue;
        }
        let Some((port, _)) = parse_port(b, p + 1) else {
            continue;
        };
        seen_proxy = true;
        if !is_routable(ip) || !(allow_private || is_public(ip)) {
            continue;
        }
        loc.push_proxy(SocketAddrV4::new(ip, port));
    }
    Some(loc)
}

/// `port:IP`, the reversed form of the servent's own address in `X-Falt`.
fn parse_port_ip(tok: &str) -> Option<SocketAddrV4> {
    let b = tok.as_bytes();
    let (port, p) = parse_port(b, 0)?;
    if b.get(p) != Some(&b':') {
        return None;
    }
    let (ip, q) = parse_ipv4(b, p + 1)?;
    (q == b.len()).then_some(SocketAddrV4::new(ip, port))
}

/// A dotted quad at `p`: four decimal octets of 1–3 digits, each ≤ 255, not followed by
/// another `.` or digit. Stricter than gtkg's `string_to_ip_strict`, which takes `999` as an
/// octet and `1.2.3.4567` as `1.2.3.456`.
fn parse_ipv4(b: &[u8], mut p: usize) -> Option<(Ipv4Addr, usize)> {
    let mut o = [0u8; 4];
    for (i, slot) in o.iter_mut().enumerate() {
        if i > 0 {
            if b.get(p) != Some(&b'.') {
                return None;
            }
            p += 1;
        }
        let start = p;
        let mut v: u32 = 0;
        while p < b.len() && b[p].is_ascii_digit() && p - start < 3 {
            v = v * 10 + u32::from(b[p] - b'0');
            p += 1;
        }
        if p == start || v > 255 {
            return None;
        }
        // v ≤ 255 was checked just above.
        *slot = v as u8;
    }
    if matches!(b.get(p), Some(c) if c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    Some((Ipv4Addr::from(o), p))
}

/// A decimal port at `p`, 1–65535 (gtkg refuses 0 and overflow, `parse_uint16`).
fn parse_port(b: &[u8], mut p: usize) -> Option<(u16, usize)> {
    let start = p;
    let mut v: u32 = 0;
    while p < b.len() && b[p].is_ascii_digit() {
        v = v * 10 + u32::from(b[p] - b'0');
        if v > 65535 {
            return None;
        }
        p += 1;
    }
    if p == start || v == 0 {
        return None;
    }
    // 1 ≤ v ≤ 65535 was checked in the loop and just above.
    Some((v as u16, p))
}

fn contains_ci(hay: &str, needle: &str) -> bool {
    hay.as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// A date after a legacy URL: ISO 8601 or RFC 1123; when the whole text fails, the last
/// blank-separated part is tried (stacked dates, gtkg `dmesh_collect_locations`).
fn parse_date(text: &str) -> Option<u64> {
    let t = trim_blanks(text);
    if t.is_empty() {
        return None;
    }
    parse_iso8601(t).or_else(|| parse_rfc1123(t)).or_else(|| {
        t.rsplit(|c: char| c.is_ascii_whitespace())
            .next()
            .and_then(parse_iso8601)
    })
}

/// `YYYY-MM-DDTHH:MM[:SS]Z` (also with a space for `T`, and without the `Z`), UTC, as seconds
/// since the UNIX epoch. gtkg writes `2010-02-23T16:06:55Z` (`timestamp_utc_to_string`).
pub fn parse_iso8601(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<u32> {
        let part = b.get(from..from + len)?;
        part.iter().all(u8::is_ascii_digit).then(|| {
            part.iter()
                .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
        })
    };
    let year = num(0, 4)?;
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    let month = num(5, 2)?;
    let day = num(8, 2)?;
    if !matches!(b.get(10), Some(b'T' | b't' | b' ')) || b.get(13) != Some(&b':') {
        return None;
    }
    let hour = num(11, 2)?;
    let minute = num(14, 2)?;
    let (second, mut p) = if b.get(16) == Some(&b':') {
        (num(17, 2)?, 19)
    } else {
        (0, 16)
    };
    if matches!(b.get(p), Some(b'Z' | b'z')) {
        p += 1;
    }
    if p != b.len() {
        return None;
    }
    unix_time(year, month, day, hour, minute, second, 0)
}

/// `Mon, 17 Jun 2002 07:53:14 GMT` (or a `+hhmm` / `-hhmm` zone).
fn parse_rfc1123(s: &str) -> Option<u64> {
    let rest = s.split_once(',').map_or(s, |(_, r)| r);
    let mut it = rest.split_ascii_whitespace();
    let day: u32 = it.next()?.parse().ok()?;
    let mon = it.next()?;
    const MONTHS: [&str; 12] = [
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let year: u32 = it.next()?.parse().ok()?;
    let mut hms = it.next()?.split(':');
    let hour: u32 = hms.next()?.parse().ok()?;
    let minute: u32 = hms.next()?.parse().ok()?;
    let second: u32 = hms.next().map_or(Some(0), |x| x.parse().ok())?;
    let offset: i64 = match it.next() {
        None => 0,
        Some(z) if z.eq_ignore_ascii_case("gmt") || z.eq_ignore_ascii_case("utc") => 0,
        Some(z) if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z.get(1..3)?.parse().ok()?;
            let mm: i64 = z.get(3..5)?.parse().ok()?;
            let sign = if z.starts_with('-') { -1 } else { 1 };
            sign * (hh * 3600 + mm * 60)
        }
        Some(_) => return None,
    };
    if it.next().is_some() {
        return None;
    }
    unix_time(year, month, day, hour, minute, second, offset)
}

/// Seconds since 1970-01-01T00:00:00Z of a civil UTC time minus `offset` seconds; `None` for
/// impossible fields or a time before the epoch.
fn unix_time(
    year: u32,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    offset: i64,
) -> Option<u64> {
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm), exact for the proleptic Gregorian calendar.
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let t = days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second)
        - offset;
    u64::try_from(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::swarm::testutil::XorShift;

    fn sa(s: &str) -> SocketAddrV4 {
        s.parse().expect("test address")
    }

    fn addrs(v: &[AltLoc]) -> Vec<String> {
        v.iter()
            .map(|a| format!("{}{}", a.addr, if a.tls { "+tls" } else { "" }))
            .collect()
    }

    const SHA1: &str = "3C7HUJ3DPAS2CT2UIPN3CMWDPESG4YSK";

    #[test]
    fn x_alt_compact_forms() {
        assert_eq!(
            addrs(&parse_x_alt("tls=8, 1.2.3.4:5678").unwrap()),
            ["1.2.3.4:5678+tls"]
        );
        assert_eq!(
            addrs(&parse_x_alt("1.2.3.4, 5.6.7.8:1234;9.9.9.9:80 ,, ;").unwrap()),
            ["1.2.3.4:6346", "5.6.7.8:1234", "9.9.9.9:80"]
        );
        assert_eq!(
            addrs(&parse_x_alt("TLS=A, 1.1.1.1, 2.2.2.2, 3.3.3.3").unwrap()),
            ["1.1.1.1:6346+tls", "2.2.2.2:6346", "3.3.3.3:6346+tls"]
        );
        // Folded value left with CR LF TAB inside.
        assert_eq!(
            addrs(&parse_x_alt("1.2.3.4:1,\r\n\t5.6.7.8:2").unwrap()),
            ["1.2.3.4:1", "5.6.7.8:2"]
        );
    }

    #[test]
    fn x_alt_skips_garbage_tokens_without_failing() {
        let v = parse_x_alt(
            "1.2.3.4:0, 1.2.3.4:65536, 1.2.3.4:x, garbage, [::1]:6346, 999.1.1.1, 1.2.3.4.5, \
             1.2.3.4567, 0.0.0.0:1, 255.255.255.255:1, 224.0.0.1:1, 240.0.0.1:1, 8.8.8.8:53",
        )
        .unwrap();
        assert_eq!(addrs(&v), ["8.8.8.8:53"]);
        // Private and loopback are kept; the caller filters with `is_public`.
        let v = parse_x_alt("192.168.1.2:7000, 127.0.0.1:7001").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|a| !is_public(*a.addr.ip())));
        assert!(parse_x_alt("").unwrap().is_empty());
    }

    #[test]
    fn second_tls_token_is_an_unusable_entry() {
        let v = parse_x_alt("tls=8, 1.1.1.1, tls=8, 2.2.2.2").unwrap();
        // tls=8 marks entry 0; the second `tls=` counts as entry 1 and is skipped.
        assert_eq!(addrs(&v), ["1.1.1.1:6346+tls", "2.2.2.2:6346"]);
    }

    #[test]
    fn shareaza_urls_in_x_alt_are_read_as_legacy() {
        let v = parse_x_alt(&format!(
            "http://1.2.3.4:6346/uri-res/N2R?urn:sha1:{SHA1} 2004-05-01T10:00Z, \
             http://5.6.7.8/uri-res/N2R?urn:sha1:{SHA1}"
        ))
        .unwrap();
        assert_eq!(addrs(&v), ["1.2.3.4:6346", "5.6.7.8:80"]);
        let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
        let v = parse_x_alt_for(
            &format!(
                "http://1.2.3.4:6346/uri-res/N2R?urn:sha1:{SHA1}, \
                 http://5.6.7.8:6346/uri-res/N2R?urn:sha1:{other}"
            ),
            Some(&SHA1.to_ascii_lowercase()),
        )
        .unwrap();
        assert_eq!(addrs(&v), ["1.2.3.4:6346"]);
    }

    #[test]
    fn legacy_forms_dates_quotes_and_missing_commas() {
        let v = parse_alternate_location(
            &format!(
                "http://1.2.3.4:6346/uri-res/N2R?urn:sha1:{SHA1} 2002-06-17T07:53:14Z\
                 http://2.2.2.2:6347/uri-res/N2R?urn:sha1:{SHA1} Mon, 17 Jun 2002 07:53:14 +0200, \
                 \"http://3.3.3.3:6348/uri-res/N2R?urn:sha1:{SHA1}\" 2015-03-06T16:00Z 2015-03-06T19:09Z, \
                 http://4.4.4.4:6349/get/12/a,b.mp3 2002-06-17T07:53Z, \
                 http://host.example:6346/uri-res/N2R?urn:sha1:{SHA1}, \
                 http://5.5.5.5:6350/uri-res/N2R?urn:bitprint:{SHA1}.LWPNACQDBZRYXW3VHJVCJ64QBZNGHOHHHZWCLNQ"
            ),
            None,
        )
        .unwrap();
        let got: Vec<(String, Option<u64>)> = v
            .iter()
            .map(|d| (d.loc.addr.to_string(), d.unix_time))
            .collect();
        assert_eq!(
            got,
            [
                ("1.2.3.4:6346".to_string(), Some(1_024_300_394)),
                ("2.2.2.2:6347".to_string(), Some(1_024_300_394 - 7200)),
                ("3.3.3.3:6348".to_string(), Some(1_425_668_940)),
                ("5.5.5.5:6350".to_string(), None),
            ]
        );
    }

    #[test]
    fn x_nalt_is_compact_only() {
        assert_eq!(
            addrs(&parse_x_nalt("1.2.3.4:6346, 5.6.7.8:6347").unwrap()),
            ["1.2.3.4:6346", "5.6.7.8:6347"]
        );
        let url = format!("http://1.2.3.4:6346/uri-res/N2R?urn:sha1:{SHA1}");
        assert!(parse_x_nalt(&url).unwrap().is_empty());
    }

    #[test]
    fn format_x_alt_like_gtkg() {
        let own = AltLoc {
            addr: sa("1.2.3.4:5678"),
            tls: true,
        };
        let others = [
            AltLoc::new(sa("5.6.7.8:6346")),
            AltLoc::new(sa("9.9.9.9:1")),
        ];
        let mut all = vec![own];
        all.extend(others);
        assert_eq!(
            format_x_alt(&all, 1024),
            "tls=8, 1.2.3.4:5678, 5.6.7.8, 9.9.9.9:1"
        );
        assert_eq!(format_x_alt(&others, 1024), "5.6.7.8, 9.9.9.9:1");
        assert_eq!(format_x_alt(&others, 0), "");
        // Budget counts the whole line "X-Alt: …\r\n".
        let exact = header_line_len(X_ALT, "5.6.7.8".len());
        assert_eq!(format_x_alt(&others, exact), "5.6.7.8");
        assert_eq!(format_x_alt(&others, exact - 1), "");
        // A long entry that does not fit is skipped, a later short one still goes in.
        let mixed = [
            AltLoc::new(sa("111.111.111.111:11111")),
            AltLoc::new(sa("1.1.1.1:6346")),
        ];
        assert_eq!(format_x_alt(&mixed, header_line_len(X_ALT, 10)), "1.1.1.1");
        let five: Vec<AltLoc> = (1..=5)
            .map(|i| AltLoc {
                addr: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 6346),
                tls: i == 5,
            })
            .collect();
        let text = format_x_alt(&five, 1024);
        assert!(text.starts_with("tls=08, "), "{text}");
        assert_eq!(parse_x_alt(&text).unwrap(), five);
    }

    #[test]
    fn format_x_nalt_always_has_the_port_and_stops_at_budget() {
        let v = [sa("1.2.3.4:6346"), sa("5.6.7.8:1"), sa("9.9.9.9:2")];
        assert_eq!(
            format_x_nalt(&v, 1024),
            "1.2.3.4:6346, 5.6.7.8:1, 9.9.9.9:2"
        );
        let two = header_line_len(X_NALT, "1.2.3.4:6346, 5.6.7.8:1".len());
        assert_eq!(format_x_nalt(&v, two), "1.2.3.4:6346, 5.6.7.8:1");
        let back: Vec<SocketAddrV4> = parse_x_nalt(&format_x_nalt(&v, 1024))
            .unwrap()
            .iter()
            .map(|a| a.addr)
            .collect();
        assert_eq!(back, v);
    }

    #[test]
    fn limewire_x_falt_sample() {
        let v = parse_x_falt(
            "9DBC52EEEBCA2C8A79036D626B959900;fwt/1;26252:85.182.49.3;pptls=E;\
             69.12.88.95:1085;64.53.20.48:804;66.17.23.159:343",
            false,
        )
        .unwrap();
        assert_eq!(v.len(), 1);
        let f = &v[0];
        assert_eq!(f.guid.to_hex(), "9dbc52eeebca2c8a79036d626b959900");
        assert_eq!(f.addr, Some(sa("85.182.49.3:26252")));
        assert_eq!(
            f.proxies(),
            [
                sa("69.12.88.95:1085"),
                sa("64.53.20.48:804"),
                sa("66.17.23.159:343")
            ]
        );
        assert_eq!(
            format_x_falt(&v, 1024),
            "9dbc52eeebca2c8a79036d626b959900;26252:85.182.49.3;69.12.88.95:1085;\
             64.53.20.48:804;66.17.23.159:343"
        );
        assert_eq!(parse_x_falt(&format_x_falt(&v, 1024), false).unwrap(), v);
    }

    #[test]
    fn x_falt_rules() {
        let g = "00112233445566778899aabbccddeeff";
        let v = parse_x_falt(
            &format!(
                "{g};1.1.1.1:1;2.2.2.2:2;3.3.3.3:3;4.4.4.4:4;5.5.5.5:5;1.1.1.1:1, \
                 nothex;1.1.1.1:1, \
                 ffeeddccbbaa99887766554433221100;10.0.0.1:1;127.0.0.1:2;6.6.6.6:6;\
                 2010-02-23 16:06:55Z;7.7.7.7:7, \
                 {g};8.8.8.8:8"
            ),
            false,
        )
        .unwrap();
        assert_eq!(v.len(), 2, "bad GUID skipped, duplicate GUID dropped");
        assert_eq!(v[0].proxies().len(), FW_MAX_PROXIES);
        assert_eq!(v[0].addr, None);
        assert_eq!(
            v[1].proxies(),
            [sa("6.6.6.6:6")],
            "private dropped, stamp ends entry"
        );
        let v = parse_x_falt("ffeeddccbbaa99887766554433221100;10.0.0.1:1", true).unwrap();
        assert_eq!(v[0].proxies(), [sa("10.0.0.1:1")]);
        // GUID alone: gtkg's own entry when firewalled.
        let alone = parse_x_falt(g, false).unwrap();
        assert_eq!(format_x_falt(&alone, 1024), g);
        assert_eq!(format_x_falt(&alone, 10), "");
    }

    #[test]
    fn dates_parse() {
        assert_eq!(parse_iso8601("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_iso8601("2010-02-23 16:06:55Z"), Some(1_266_941_215));
        assert_eq!(parse_iso8601("2010-02-23T16:06Z"), Some(1_266_941_160));
        assert_eq!(parse_iso8601("2010-13-23T16:06Z"), None);
        assert_eq!(parse_iso8601("1969-12-31T23:59:59Z"), None);
        assert_eq!(
            parse_rfc1123("Mon, 17 Jun 2002 07:53:14 GMT"),
            Some(1_024_300_394)
        );
    }

    #[test]
    fn tls_bitmap_round_trip() {
        assert_eq!(tls_bitmap([true].into_iter()), "8");
        assert_eq!(tls_bitmap([true, true, true, false].into_iter()), "E");
        assert_eq!(tls_bitmap([false; 9].into_iter()), "");
        let flags = [false, false, false, false, false, true, false, false, true];
        let hex = tls_bitmap(flags.into_iter());
        assert_eq!(hex, "048");
        for (i, f) in flags.iter().enumerate() {
            assert_eq!(tls_bit(&hex, i), *f);
        }
    }

    #[test]
    fn hostile_values_are_bounded() {
        let many = "1.2.3.4:1, ".repeat(1400); // < 16 KiB, 1400 tokens, all the same
        assert_eq!(parse_x_alt(&many).unwrap().len(), 1);
        let distinct: String = (0..100_000u32)
            .map(|i| format!("{}.{}.{}.1:1,", 1 + i / 65536, (i / 256) % 256, i % 256))
            .collect();
        assert_eq!(parse_x_alt(&distinct).unwrap_err().code(), "too_long");
        let short: String = distinct.chars().take(MAX_ALT_VALUE_LEN).collect();
        assert_eq!(parse_x_alt(&short).unwrap().len(), MAX_ALTS_PARSED);
        let mb = "x".repeat(1 << 20);
        assert_eq!(parse_x_nalt(&mb).unwrap_err().code(), "too_long");
        assert_eq!(parse_x_falt(&mb, false).unwrap_err().code(), "too_long");
        assert_eq!(
            parse_alternate_location(&mb, None).unwrap_err().code(),
            "too_long"
        );
        let nul = parse_x_alt("1.2.3.4:5\0, 6.6.6.6:6").unwrap();
        assert_eq!(addrs(&nul), ["6.6.6.6:6"]);
        let lossy = String::from_utf8_lossy(b"\xff\xfe1.2.3.4, 5.5.5.5:\xc3\x28");
        assert!(parse_x_alt(&lossy).unwrap().is_empty());
        let falts: String = (0..2000)
            .map(|i| format!("{:032x};1.2.3.4:5,", i))
            .collect::<String>()
            .chars()
            .take(MAX_ALT_VALUE_LEN)
            .collect();
        assert_eq!(parse_x_falt(&falts, false).unwrap().len(), MAX_ALTS_PARSED);
    }

    #[test]
    fn fuzz_parsers_never_panic() {
        let mut x = XorShift(0xa17);
        let alphabet = b"0123456789.:,; \t\r\n\"tls=hpTt/-Z\0\xc3\xa9abcdefABCDEF[]";
        let prefixes = [
            "",
            "tls=",
            "http://1.2.3.4:6346/uri-res/N2R?urn:sha1:",
            "9DBC52EEEBCA2C8A79036D626B959900;",
        ];
        for i in 0..20_000 {
            let len = (x.next_u64() % 120) as usize;
            let mut raw = prefixes[i % prefixes.len()].as_bytes().to_vec();
            raw.extend(if i % 5 == 0 {
                x.bytes(len, &[])
            } else {
                x.bytes(len, alphabet)
            });
            let text = String::from_utf8_lossy(&raw);
            let a = parse_x_alt(&text).unwrap();
            assert!(a.len() <= MAX_ALTS_PARSED);
            let _ = parse_x_nalt(&text);
            let _ = parse_alternate_location(&text, Some(SHA1));
            let f = parse_x_falt(&text, i % 2 == 0).unwrap();
            assert!(f.iter().all(|e| e.proxies().len() <= FW_MAX_PROXIES));
            let budget = (x.next_u64() % 200) as usize;
            let out = format_x_alt(&a, budget);
            assert!(out.is_empty() || header_line_len(X_ALT, out.len()) <= budget);
            let back = parse_x_alt(&out).unwrap();
            assert!(back.iter().all(|b| a.contains(b)), "{out}");
            let _ = format_x_falt(&f, budget);
            let _ = parse_date(&text);
        }
    }
}
