//! Runs the three-block exchange over any futures-io stream, in either direction. Bytes that
//! arrive after the last block (the first descriptors, maybe compressed) are handed back.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{
    Admission, Block, Compression, Decision, HeaderError, LocalInfo, PeerInfo, Role, StartLine,
    admit, answer_block, confirm_block,
};

#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    #[error("connection failed during the handshake: {0}")]
    Io(#[from] io::Error),
    #[error("peer closed the connection during the handshake")]
    Closed,
    #[error("{0}")]
    Header(#[from] HeaderError),
    #[error("peer refused: {code} {reason}")]
    Refused {
        code: u16,
        reason: String,
        try_ultrapeers: Vec<SocketAddrV4>,
    },
    #[error("we refused the peer: {code} {reason}")]
    WeRefused { code: u16, reason: &'static str },
    #[error("peer answered with a connect line where a status was expected")]
    Unexpected,
}

impl HandshakeError {
    /// Hosts the peer offered instead of itself.
    pub fn try_ultrapeers(&self) -> &[SocketAddrV4] {
        match self {
            HandshakeError::Refused { try_ultrapeers, .. } => try_ultrapeers,
            _ => &[],
        }
    }
}

/// A finished handshake.
#[derive(Debug, Clone)]
pub struct Established {
    pub peer: PeerInfo,
    pub peer_role: Role,
    pub compression: Compression,
    /// Bytes read past the last block: the start of the descriptor stream.
    pub leftover: Vec<u8>,
}

/// Reads one block; `buf` holds bytes already read and keeps what follows the block.
async fn read_block<S: AsyncRead + Unpin>(
    s: &mut S,
    buf: &mut Vec<u8>,
) -> Result<Block, HandshakeError> {
    let mut chunk = [0u8; 2048];
    loop {
        if let Some((block, len)) = Block::parse(buf)? {
            buf.drain(..len);
            return Ok(block);
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(HandshakeError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn status(block: &Block) -> Result<(u16, &str), HandshakeError> {
    match &block.start {
        StartLine::Status { code, reason } => Ok((*code, reason)),
        StartLine::Connect { .. } => Err(HandshakeError::Unexpected),
    }
}

/// We dialled: send CONNECT, read the answer, confirm.
pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    local: &LocalInfo,
    remote: Option<Ipv4Addr>,
) -> Result<Established, HandshakeError> {
    s.write_all(&local.connect_block(remote).to_bytes()).await?;
    s.flush().await?;
    let mut buf = Vec::new();
    let answer = read_block(s, &mut buf).await?;
    let peer = PeerInfo::from_headers(&answer.headers);
    let (code, reason) = status(&answer)?;
    if code != 200 {
        return Err(HandshakeError::Refused {
            code,
            reason: reason.to_string(),
            try_ultrapeers: peer.try_ultrapeers,
        });
    }
    let peer_role = peer.role();
    if local.role == Role::Leaf && peer_role == Role::Leaf {
        // Leaf-to-leaf links are obsolete (PROTOCOL.md §4): say so and leave.
        let (code, reason) = super::refusal::SHIELDED_LEAF;
        let no = Block::new(
            StartLine::Status {
                code,
                reason: reason.into(),
            },
            super::Headers::new(),
        );
        s.write_all(&no.to_bytes()).await?;
        s.flush().await?;
        return Err(HandshakeError::WeRefused { code, reason });
    }
    s.write_all(&confirm_block(local, &peer).to_bytes()).await?;
    s.flush().await?;
    let compression = Compression {
        outgoing: local.compress && peer.accepts_deflate,
        incoming: peer.sends_deflate,
    };
    Ok(Established {
        peer,
        peer_role,
        compression,
        leftover: buf,
    })
}

/// A peer dialled us: `initial` holds bytes the dispatcher already read. `admission` is asked
/// once the peer's headers are known.
pub async fn accept<S, F>(
    s: &mut S,
    local: &LocalInfo,
    initial: Vec<u8>,
    remote: Option<Ipv4Addr>,
    admission: F,
) -> Result<Established, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    F: FnOnce(&PeerInfo) -> Admission,
{
    let mut buf = initial;
    let hello = read_block(s, &mut buf).await?;
    let peer = PeerInfo::from_headers(&hello.headers);
    let adm = admission(&peer);
    let decision = admit(local, &adm, &hello.start, &peer);
    s.write_all(&answer_block(local, &adm, &decision, &peer, remote).to_bytes())
        .await?;
    s.flush().await?;
    let peer_role = match decision {
        Decision::Accept { peer_role } => peer_role,
        Decision::Refuse { code, reason } => {
            return Err(HandshakeError::WeRefused { code, reason });
        }
    };
    let confirm = read_block(s, &mut buf).await?;
    let (code, reason) = status(&confirm)?;
    if code != 200 {
        return Err(HandshakeError::Refused {
            code,
            reason: reason.to_string(),
            try_ultrapeers: PeerInfo::from_headers(&confirm.headers).try_ultrapeers,
        });
    }
    let confirmed = PeerInfo::from_headers(&confirm.headers);
    let compression = Compression {
        outgoing: local.compress && peer.accepts_deflate,
        incoming: confirmed.sends_deflate,
    };
    Ok(Established {
        peer,
        peer_role,
        compression,
        leftover: buf,
    })
}
