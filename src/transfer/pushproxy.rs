//! The push-proxy HTTP request on the shared port, as gtk-gnutella serves it (SWARM.md §5.3–5.4,
//! `pproxy.c`): `GET /gnutella/push-proxy?ServerId=<base32 GUID>` (or `/gnutella/pushproxy`,
//! or `/gnet/push-proxy?guid=<hex>`), with `X-Node: ip:port` where the servent is to connect
//! back. A pure parse; the upload server sends the Push and answers.

use std::net::SocketAddrV4;

use crate::overlay::Proxied;
use crate::wire::{FileIndex, ServentId};

/// A push-proxy request: push to `target` for `index`, to connect to `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyRequest {
    pub target: ServentId,
    pub index: FileIndex,
    pub to: SocketAddrV4,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("no ServerId or guid")]
    NoGuid,
    #[error("bad GUID {0:?}")]
    BadGuid(String),
    #[error("bad file index {0:?}")]
    BadIndex(String),
    #[error("no valid X-Node")]
    NoNode,
}

impl ProxyError {
    /// A stable code for it (the conformance vectors name these).
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::NoGuid => "no-guid",
            ProxyError::BadGuid(_) => "bad-guid",
            ProxyError::BadIndex(_) => "bad-index",
            ProxyError::NoNode => "no-node",
        }
    }
}

/// Whether `path` is a push-proxy request at all.
pub fn is_proxy_path(path: &str) -> bool {
    matches!(
        path,
        "/gnutella/push-proxy" | "/gnutella/pushproxy" | "/gnet/push-proxy"
    )
}

/// The request in `path`'s `query`, with its `X-Node` header.
pub fn parse(
    path: &str,
    query: Option<&str>,
    x_node: Option<&str>,
) -> Result<ProxyRequest, ProxyError> {
    let mut target = None;
    let mut index = FileIndex(0);
    for kv in query.unwrap_or("").split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match (path, k) {
            ("/gnet/push-proxy", "guid") => {
                target = Some(ServentId::from_hex(v).ok_or_else(|| ProxyError::BadGuid(v.into()))?);
            }
            (_, "ServerId") if path != "/gnet/push-proxy" => target = Some(base32_guid(v)?),
            (_, "file") => {
                index = FileIndex(v.parse().map_err(|_| ProxyError::BadIndex(v.into()))?);
            }
            _ => {}
        }
    }
    let target = target.ok_or(ProxyError::NoGuid)?;
    let to = x_node
        .and_then(|v| v.trim().parse::<SocketAddrV4>().ok())
        .filter(|a| a.port() != 0 && !a.ip().is_unspecified())
        .ok_or(ProxyError::NoNode)?;
    Ok(ProxyRequest { target, index, to })
}

/// A GUID in base32: 26 characters without padding, or 32 with it.
fn base32_guid(v: &str) -> Result<ServentId, ProxyError> {
    let bad = || ProxyError::BadGuid(v.into());
    let bytes = match v.len() {
        26 => data_encoding::BASE32_NOPAD.decode(v.to_ascii_uppercase().as_bytes()),
        32 => data_encoding::BASE32.decode(v.to_ascii_uppercase().as_bytes()),
        _ => return Err(bad()),
    }
    .map_err(|_| bad())?;
    let b: [u8; 16] = bytes.try_into().map_err(|_| bad())?;
    Ok(ServentId(b))
}

/// How long a push proxy has to answer.
pub const PROXY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Asks the push proxy at `proxy` to push `target` to connect back to `me` for `index`, as
/// gtk-gnutella's `cproxy_http_request` does; the status when it sent the Push (202, 203).
pub async fn ask(
    proxy: SocketAddrV4,
    target: ServentId,
    index: FileIndex,
    me: SocketAddrV4,
) -> std::io::Result<u16> {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let io = |m: String| std::io::Error::other(m);
    let exchange = async {
        let mut s = async_std::net::TcpStream::connect(proxy).await?;
        let id = data_encoding::BASE32_NOPAD.encode(&target.0);
        let req = format!(
            "GET /gnutella/push-proxy?ServerId={id}&file={} HTTP/1.1\r\nHost: {proxy}\r\n\
             User-Agent: {}\r\nConnection: close\r\nX-Node: {me}\r\n\r\n",
            index.0,
            crate::handshake::USER_AGENT
        );
        s.write_all(req.as_bytes()).await?;
        // The status line is all we read (gtk-gnutella never reads the body).
        let mut head = [0u8; 128];
        let mut got = 0;
        while got < head.len() && !head[..got].contains(&b'\n') {
            let n = s.read(&mut head[got..]).await?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..got]).into_owned())
    };
    let line = async_std::future::timeout(PROXY_TIMEOUT, exchange)
        .await
        .map_err(|_| io(format!("no answer in {} s", PROXY_TIMEOUT.as_secs())))??;
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io(format!("not an HTTP answer: {:?}", line.lines().next())))?;
    match code {
        202 | 203 => Ok(code),
        _ => Err(io(format!(
            "answered {}",
            line.lines().next().unwrap_or("").trim()
        ))),
    }
}

/// The status and reason phrase gtk-gnutella answers with.
pub fn answer(how: Proxied, target: &ServentId) -> (u16, String) {
    match how {
        Proxied::Neighbour => (202, "Push-proxy: message sent to node".into()),
        Proxied::Routed(n) => (
            203,
            format!("Push-proxy: message sent through Gnutella (via {n} nodes)"),
        ),
        Proxied::NoRoute => (
            410,
            format!("Push proxy: no route to servent GUID {}", target.to_hex()),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "8f3a9c1e5b7d2f4aff61d0c2e4b6a801";

    #[test]
    fn the_three_forms_gtk_gnutella_accepts_parse_and_nonsense_is_refused() {
        let g = ServentId::from_hex(HEX).unwrap();
        let b32 = data_encoding::BASE32_NOPAD.encode(&g.0);
        assert_eq!(b32.len(), 26);
        let node = Some("100.64.0.9:6346");
        let want = ProxyRequest {
            target: g,
            index: FileIndex(0),
            to: "100.64.0.9:6346".parse().unwrap(),
        };
        let q = format!("ServerId={b32}");
        assert_eq!(parse("/gnutella/push-proxy", Some(&q), node), Ok(want));
        let padded = data_encoding::BASE32.encode(&g.0);
        assert_eq!(padded.len(), 32);
        let q = format!("ServerId={padded}&file=7");
        let got = parse("/gnutella/pushproxy", Some(&q), node).unwrap();
        assert_eq!((got.target, got.index), (g, FileIndex(7)));
        let q = format!("guid={HEX}");
        assert_eq!(parse("/gnet/push-proxy", Some(&q), node), Ok(want));
        assert!(is_proxy_path("/gnet/push-proxy") && !is_proxy_path("/gnet/push-proxy/x"));

        assert_eq!(
            parse("/gnutella/push-proxy", None, node),
            Err(ProxyError::NoGuid)
        );
        assert!(matches!(
            parse("/gnutella/push-proxy", Some("ServerId=SHORT"), node),
            Err(ProxyError::BadGuid(_))
        ));
        let q = format!("ServerId={b32}");
        assert_eq!(
            parse("/gnutella/push-proxy", Some(&q), None),
            Err(ProxyError::NoNode)
        );
        assert_eq!(
            parse("/gnutella/push-proxy", Some(&q), Some("0.0.0.0:1")),
            Err(ProxyError::NoNode)
        );
        let q = format!("ServerId={b32}&file=x");
        assert!(matches!(
            parse("/gnutella/push-proxy", Some(&q), node),
            Err(ProxyError::BadIndex(_))
        ));
        assert_eq!(answer(Proxied::Routed(2), &g).0, 203);
        assert!(answer(Proxied::NoRoute, &g).1.ends_with(HEX));
    }
}
