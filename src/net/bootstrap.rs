//! Finding the network when the host cache, `--peer` and pongs have run dry: UDP host caches
//! (a UDP Ping with GGEP `SCP`, answered by Pongs listing hosts in GGEP `IPP`) and GWebCaches
//! (an HTTP GET answered by a list of `ip:port`).

use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

use async_std::future::timeout;
use async_std::net::{TcpStream, UdpSocket};
use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use log::{debug, info};

use super::hyper_io::HyperIo;
use crate::wire::ggep::{Encoding, GgepBuilder};
use crate::wire::types::addr_ip_port;
use crate::wire::{Descriptor, Framed, Ggep, Guid, Hops, Payload, Ping, Ttl, frame};

/// UDP host caches that gtk-gnutella ships (`src/core/uhc.c`).
pub const BUILTIN_UHCS: &[&str] = &[
    "1.uhc.gtk-gnutella.nl:19104",
    "2.uhc.gtk-gnutella.nl:4876",
    "useast.gnutella.dyslexicfish.net:15321",
    "uswest.gnutella.dyslexicfish.net:18037",
    "uk.gnutella.dyslexicfish.net:41481",
];

/// GWebCaches that still answer `net=gnutella` (Bazooka serves both networks).
pub const BUILTIN_GWCS: &[&str] = &["http://cache.trillinux.org/g2/bazooka.php"];

/// A GWebCache answer larger than this is not a host list.
const MAX_GWC_BODY: usize = 64 * 1024;
const GWC_TIMEOUT: Duration = Duration::from_secs(20);

/// Where to look for hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Service {
    /// `host:port` of a UDP host cache.
    Uhc(String),
    /// `http://host[:port]/path` of a GWebCache.
    Gwc(String),
}

impl Service {
    pub fn builtin() -> Vec<Service> {
        BUILTIN_UHCS
            .iter()
            .map(|s| Service::Uhc(s.to_string()))
            .chain(BUILTIN_GWCS.iter().map(|s| Service::Gwc(s.to_string())))
            .collect()
    }
}

impl std::fmt::Display for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Service::Uhc(h) => write!(f, "UDP host cache {h}"),
            Service::Gwc(u) => write!(f, "GWebCache {u}"),
        }
    }
}

/// The UDP Ping sent to a host cache: TTL 1, GGEP `SCP` asking for ultrapeers (0x01).
pub fn uhc_ping(muid: Guid) -> Vec<u8> {
    let mut g = GgepBuilder::new();
    g.push("SCP", &[0x01], Encoding::default())
        .expect("valid id");
    let g = g.finish();
    Descriptor {
        muid,
        ttl: Ttl(1),
        hops: Hops(0),
        payload: Payload::Ping(Ping {
            ggep: Some(Ggep::parse_all(&g).expect("built valid")),
        }),
    }
    .to_vec()
}

/// Hosts in a datagram: the pong's own address and its `IPP` list. Anything that is not a
/// well-formed Pong gives nothing.
pub fn hosts_from_pong(datagram: &[u8]) -> Vec<SocketAddrV4> {
    let Ok(Framed::Frame(f)) = frame(datagram) else {
        return Vec::new();
    };
    let Ok(Descriptor {
        payload: Payload::Pong(p),
        ..
    }) = Descriptor::decode(&f)
    else {
        return Vec::new();
    };
    let mut out = vec![p.addr];
    if let Some(ipp) = p.ggep.and_then(|g| g.value("IPP")) {
        out.extend(
            ipp.chunks_exact(6)
                .map(|c| addr_ip_port(c.try_into().expect("chunks of 6"))),
        );
    }
    out
}

/// Parses a GWebCache answer: `ip:port` lines (spec 1, `hostfile=1`) or `H|ip:port|…` lines
/// (spec 2). Other lines (URLs, `I|` info, errors) are skipped.
pub fn hosts_from_gwc(body: &str) -> Vec<SocketAddrV4> {
    body.lines()
        .filter_map(|l| {
            let l = l.trim();
            let addr = match l.strip_prefix("H|").or_else(|| l.strip_prefix("h|")) {
                Some(rest) => rest.split('|').next()?,
                None => l,
            };
            addr.parse().ok()
        })
        .collect()
}

fn resolve(hostport: &str) -> Option<SocketAddr> {
    hostport
        .to_socket_addrs()
        .ok()?
        .find(|a| matches!(a, SocketAddr::V4(_)))
}

/// Sends a host-cache ping from our UDP socket; pongs come back to [`udp_loop`].
pub async fn ping_uhc(socket: &UdpSocket, hostport: &str) {
    let host = hostport.to_string();
    let resolved = async_std::task::spawn_blocking(move || resolve(&host)).await;
    let Some(addr) = resolved else {
        debug!("cannot resolve UDP host cache {hostport}");
        return;
    };
    if let Err(e) = socket.send_to(&uhc_ping(Guid::random()), addr).await {
        debug!("cannot ping UDP host cache {hostport}: {e}");
    }
}

/// Fetches hosts from a GWebCache.
pub async fn fetch_gwc(url: &str) -> Result<Vec<SocketAddrV4>, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL {url}: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("{url}: only http:// GWebCaches are supported"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path();
    let query = "get=1&hostfile=1&net=gnutella&client=SRVT&version=0.1";
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}&{query}"),
        None => format!("{path}?{query}"),
    };
    let work = async {
        let hp = format!("{host}:{port}");
        let addr = async_std::task::spawn_blocking(move || resolve(&hp))
            .await
            .ok_or_else(|| format!("cannot resolve {host}"))?;
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(HyperIo(stream))
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let req = hyper::Request::get(target)
            .header(hyper::header::HOST, &host)
            .header(hyper::header::USER_AGENT, crate::handshake::USER_AGENT)
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        // The connection future is polled alongside the request (RUNTIME.md: in the same task).
        let response = async {
            let resp = sender
                .send_request(req)
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("{url}: HTTP {}", resp.status()));
            }
            let body = Limited::new(resp.into_body(), MAX_GWC_BODY)
                .collect()
                .await
                .map_err(|e| format!("{url}: {e}"))?
                .to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        };
        // Once the connection ends, the response (which errors if it was cut) decides.
        let conn = async {
            let _ = conn.await;
            futures_lite::future::pending::<Result<String, String>>().await
        };
        futures_lite::future::or(response, conn).await
    };
    let body = timeout(GWC_TIMEOUT, work)
        .await
        .map_err(|_| format!("{url}: timed out"))??;
    let hosts = hosts_from_gwc(&body);
    info!("{} hosts from GWebCache {url}", hosts.len());
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_uhc_ping_is_a_ttl_1_ping_with_scp() {
        let p = uhc_ping(Guid([3; 16]));
        let Ok(Framed::Frame(f)) = frame(&p) else {
            panic!()
        };
        let d = Descriptor::decode(&f).unwrap();
        assert_eq!(d.ttl, Ttl(1));
        let Payload::Ping(ping) = d.payload else {
            panic!()
        };
        assert_eq!(ping.ggep.unwrap().value("SCP").as_deref(), Some(&[1u8][..]));
        // PROTOCOL.md §11: "Ping + GGEP SCP=01 (30 B)".
        assert_eq!(p.len(), 30);
        assert_eq!(&p[23..], &[0xc3, 0x83, 0x53, 0x43, 0x50, 0x41, 0x01]);
    }

    #[test]
    fn gwc_answers_of_both_specs_parse() {
        let body = "1.2.3.4:6346\nH|5.6.7.8:6347|3600\nI|pong|x\nhttp://other/gwc.php\nERROR\n";
        assert_eq!(
            hosts_from_gwc(body),
            vec![
                "1.2.3.4:6346".parse::<SocketAddrV4>().unwrap(),
                "5.6.7.8:6347".parse().unwrap()
            ]
        );
    }

    #[test]
    fn junk_datagrams_give_no_hosts() {
        assert!(hosts_from_pong(b"hello").is_empty());
        assert!(hosts_from_pong(&uhc_ping(Guid([1; 16]))).is_empty());
    }
}
