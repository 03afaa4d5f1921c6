//! A small client of the API (hyper over async-std), for the CLI commands that talk to a
//! running daemon and for tests. One connection per request: the CLI makes a handful.

use std::net::SocketAddr;
use std::time::Duration;

use async_std::net::TcpStream;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};

use crate::net::hyper_io::HyperIo;

/// How long connecting to a local daemon may take; it is on this machine.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read into memory (a full search's results are well under this).
const MAX_REPLY: usize = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no servent is running at {0}; start one with `servent run`")]
    NotRunning(SocketAddr),
    #[error("cannot talk to the servent at {0}: {1}")]
    Io(SocketAddr, String),
    /// The API answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
}

/// An answer.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The JSON of a 2xx answer, or the API's error message.
    pub fn ok(self) -> Result<serde_json::Value, ClientError> {
        if (200..300).contains(&self.status) {
            return Ok(self.json());
        }
        let message = self
            .json()
            .get("error")
            .and_then(|e| e.as_str())
            .map(str::to_owned)
            .unwrap_or_else(|| self.text());
        Err(ClientError::Api {
            status: self.status,
            message,
        })
    }
}

/// Where the API is and the token to show it.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: SocketAddr,
    pub token: Option<String>,
    /// The Host header to send; by default the address.
    pub host: Option<String>,
}

impl Client {
    pub fn new(addr: SocketAddr, token: Option<String>) -> Self {
        Client {
            addr,
            token,
            host: None,
        }
    }

    async fn connect(
        &self,
    ) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, ClientError> {
        let stream = match async_std::future::timeout(
            CONNECT_TIMEOUT,
            TcpStream::connect(self.addr),
        )
        .await
        {
            Err(_) => return Err(ClientError::NotRunning(self.addr)),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(ClientError::NotRunning(self.addr));
            }
            Ok(Err(e)) => return Err(ClientError::Io(self.addr, e.to_string())),
            Ok(Ok(s)) => s,
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(HyperIo(stream))
            .await
            .map_err(|e| ClientError::Io(self.addr, e.to_string()))?;
        async_std::task::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Request<Full<Bytes>>, ClientError> {
        let host = self
            .host
            .clone()
            .unwrap_or_else(|| super::server::display_addr(self.addr).to_string());
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, host);
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let bytes = match body {
            Some(v) => {
                b = b.header(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                Bytes::from(serde_json::to_vec(v).unwrap_or_default())
            }
            None => Bytes::new(),
        };
        b.body(Full::new(bytes))
            .map_err(|e| ClientError::Io(self.addr, e.to_string()))
    }

    /// Sends one request and reads the whole answer, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Reply, ClientError> {
        let mut sender = self.connect().await?;
        let req = self.request(method, path, body)?;
        let io = |e: hyper::Error| ClientError::Io(self.addr, e.to_string());
        let resp = sender.send_request(req).await.map_err(io)?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_REPLY)
            .collect()
            .await
            .map_err(|e| ClientError::Io(self.addr, e.to_string()))?
            .to_bytes()
            .to_vec();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    pub async fn get(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.send(Method::GET, path, None).await?.ok()
    }

    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, ClientError> {
        self.send(Method::POST, path, Some(body)).await?.ok()
    }

    pub async fn delete(&self, path: &str) -> Result<serde_json::Value, ClientError> {
        self.send(Method::DELETE, path, None).await?.ok()
    }

    /// Reads an NDJSON stream, calling `each` per line until it returns false or the stream
    /// ends.
    pub async fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(serde_json::Value) -> bool,
    ) -> Result<(), ClientError> {
        let mut sender = self.connect().await?;
        let req = self.request(Method::GET, path, None)?;
        let io = |e: hyper::Error| ClientError::Io(self.addr, e.to_string());
        let resp = sender.send_request(req).await.map_err(io)?;
        if !resp.status().is_success() {
            let status = resp.status().as_u16();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes().to_vec())
                .unwrap_or_default();
            return Reply {
                status,
                headers: hyper::HeaderMap::new(),
                body,
            }
            .ok()
            .map(drop);
        }
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(io)?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(p) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=p).collect();
                if let Ok(v) = serde_json::from_slice(&line)
                    && !each(v)
                {
                    return Ok(());
                }
            }
            if buf.len() > MAX_REPLY {
                return Err(ClientError::Io(
                    self.addr,
                    "a stream line is too long".into(),
                ));
            }
        }
        Ok(())
    }
}
