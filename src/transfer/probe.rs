//! What a source says of a file before any download: its size, from a `HEAD` request.

use std::io;
use std::net::SocketAddrV4;
use std::time::Duration;

use async_std::future::timeout;
use async_std::net::TcpStream;
use http_body_util::Empty;
use hyper::body::Bytes;

use crate::net::hyper_io::HyperIo;
use crate::wire::Sha1Urn;

/// The whole exchange, connection included.
const DEADLINE: Duration = Duration::from_secs(15);

/// The size of `urn` as the source at `addr` serves it (`Content-Length` of a whole-file
/// answer, the total of a `Content-Range` from a partial source).
pub async fn size_of(addr: SocketAddrV4, urn: &Sha1Urn) -> io::Result<u64> {
    let ask = async {
        let stream = TcpStream::connect(addr).await?;
        let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
            .allow_obsolete_multiline_headers_in_responses(true)
            .handshake::<_, Empty<Bytes>>(HyperIo(stream))
            .await
            .map_err(io::Error::other)?;
        // The connection future runs beside the request (RUNTIME.md).
        let conn = async {
            let _ = conn.await;
            Err(io::Error::other("the connection closed"))
        };
        let req = hyper::Request::head(format!("/uri-res/N2R?{urn}"))
            .header(hyper::header::HOST, addr.to_string())
            .header(hyper::header::USER_AGENT, crate::handshake::USER_AGENT)
            .body(Empty::new())
            .map_err(io::Error::other)?;
        let answer = async {
            let resp = sender.send_request(req).await.map_err(io::Error::other)?;
            let h = resp.headers();
            let hv = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
            if let Some(u) = hv("X-Gnutella-Content-URN")
                && u.parse::<Sha1Urn>().is_ok_and(|u| u != *urn)
            {
                return Err(io::Error::other("it serves another file"));
            }
            let total = hv("Content-Range")
                .and_then(|r| r.rsplit_once('/'))
                .and_then(|(_, t)| t.trim().parse::<u64>().ok());
            let length = hv("Content-Length").and_then(|v| v.trim().parse::<u64>().ok());
            match resp.status().as_u16() {
                206 => total.ok_or_else(|| io::Error::other("206 without a total size")),
                200 => length.ok_or_else(|| io::Error::other("200 without a length")),
                code => Err(io::Error::other(format!("it answered {code}"))),
            }
        };
        futures_lite::future::or(answer, conn).await
    };
    timeout(DEADLINE, ask)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?
}
