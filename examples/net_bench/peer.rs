//! A scripted peer on a blocking socket. Its zlib streams are flate2's defaults (window 15,
//! level 6), like gtk-gnutella's, independent of the node's link code.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddrV4, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use futures_lite::io::AssertAsync;
use servent::handshake::driver;
use servent::handshake::{LocalInfo, Role};
use servent::wire::ServentId;

pub struct Peer {
    pub stream: TcpStream,
    pub deflate: Option<Compress>,
    pub inflate: Option<Decompress>,
    /// Inflated, not yet framed.
    pub plain: Vec<u8>,
    pub wire: Vec<u8>,
    pub chunk: Vec<u8>,
    pub guid: ServentId,
    /// Bytes read from the socket, and what they inflated to.
    pub wire_in: u64,
    pub plain_in: u64,
}

impl Peer {
    pub fn connect(addr: SocketAddrV4, compress: bool) -> std::io::Result<Peer> {
        Self::connect_as(addr, compress, Role::Ultrapeer)
    }

    pub fn connect_as(addr: SocketAddrV4, compress: bool, role: Role) -> std::io::Result<Peer> {
        let mut stream = connect_from_own_address(addr)?;
        stream.set_nodelay(true)?;
        let guid = ServentId::random();
        let local = LocalInfo {
            user_agent: "net-bench/1".into(),
            role,
            guid,
            listen: None,
            compress,
            degree: 32,
            max_ttl: 4,
        };
        let est = futures_lite::future::block_on(driver::connect(
            &mut AssertAsync::new(&mut stream),
            &local,
            Some(*addr.ip()),
        ))
        .map_err(|e| std::io::Error::other(format!("handshake: {e}")))?;
        assert_eq!(est.compression.outgoing, compress, "deflate as asked");
        assert_eq!(est.compression.incoming, compress, "inflate as asked");
        let mut p = Peer {
            stream,
            deflate: compress.then(|| Compress::new(Compression::default(), true)),
            inflate: compress.then(|| Decompress::new(true)),
            plain: Vec::new(),
            wire: Vec::new(),
            chunk: vec![0; 64 * 1024],
            guid,
            wire_in: 0,
            plain_in: 0,
        };
        p.absorb_leftover(est.leftover);
        Ok(p)
    }

    pub fn absorb_leftover(&mut self, left: Vec<u8>) {
        let n = left.len();
        self.chunk[..n].copy_from_slice(&left);
        self.absorb(n);
    }

    /// Inflates `chunk[..n]` onto `plain`.
    pub fn absorb(&mut self, n: usize) {
        self.wire_in += n as u64;
        let before = self.plain.len();
        self.inflate_chunk(n);
        self.plain_in += (self.plain.len() - before) as u64;
    }

    pub fn inflate_chunk(&mut self, n: usize) {
        let Some(z) = self.inflate.as_mut() else {
            self.plain.extend_from_slice(&self.chunk[..n]);
            return;
        };
        let mut input = &self.chunk[..n];
        loop {
            self.plain.reserve(64 * 1024);
            let in0 = z.total_in();
            let out0 = z.total_out();
            let st = z
                .decompress_vec(input, &mut self.plain, FlushDecompress::Sync)
                .expect("node's deflate stream");
            assert!(st != Status::StreamEnd, "node ended its stream");
            let used = (z.total_in() - in0) as usize;
            input = &input[used..];
            if input.is_empty() && (z.total_out() - out0) < 64 * 1024 {
                return;
            }
        }
    }

    /// Compresses (sync flush) and writes `data`.
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let Some(z) = self.deflate.as_mut() else {
            return self.stream.write_all(data);
        };
        self.wire.clear();
        let mut input = data;
        loop {
            self.wire.reserve(input.len() + 64);
            let in0 = z.total_in();
            z.compress_vec(input, &mut self.wire, FlushCompress::Sync)
                .expect("deflate into a Vec");
            input = &input[(z.total_in() - in0) as usize..];
            if input.is_empty() && self.wire.len() < self.wire.capacity() {
                break;
            }
        }
        self.stream.write_all(&self.wire)
    }

    /// One read (bounded by the socket's read timeout). False on timeout; error on EOF.
    pub fn read_some(&mut self) -> std::io::Result<bool> {
        match self.stream.read(&mut self.chunk) {
            Ok(0) => Err(ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.absorb(n);
                Ok(true)
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Calls `f(kind, descriptor)` for each whole descriptor in `plain` and drops them.
    pub fn frames(&mut self, mut f: impl FnMut(u8, &[u8])) {
        let mut pos = 0;
        while self.plain.len() - pos >= 23 {
            let h = &self.plain[pos..];
            let len = u32::from_le_bytes([h[19], h[20], h[21], h[22]]) as usize;
            if h.len() < 23 + len {
                break;
            }
            f(h[16], &h[..23 + len]);
            pos += 23 + len;
        }
        self.plain.drain(..pos);
    }
}

/// Connects from an address of 127.0.0.0/8 no other bench peer used: the node admits at most
/// `MAX_OPEN_PER_IP` links per address, and real peers each have their own.
pub fn connect_from_own_address(to: SocketAddrV4) -> std::io::Result<TcpStream> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // 127.1.0.1 onward, skipping .0 and .255 in the last byte.
    let ip = std::net::Ipv4Addr::new(127, 1, (n / 254) as u8, (n % 254) as u8 + 1);
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    s.bind(&SocketAddrV4::new(ip, 0).into())?;
    s.connect(&to.into())?;
    Ok(s.into())
}
