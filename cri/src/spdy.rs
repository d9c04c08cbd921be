//! SPDY/3.1, the server side, as Kubernetes' streaming clients speak it (client-go through
//! moby/spdystream): `kubectl port-forward` (directly, or tunnelled in WebSocket binary
//! messages by newer clients) and `kubectl exec`/`attach` from clients older than the
//! WebSocket protocols.
//!
//! The client opens streams (SYN_STREAM, headers naming each stream's role); the server
//! accepts each with a SYN_REPLY and both sides exchange DATA frames, FIN closing a direction.
//! PINGs are answered; SETTINGS and WINDOW_UPDATE are read and ignored (spdystream does no flow
//! control); GOAWAY or the connection's end finishes everything. Header blocks are compressed
//! with one zlib stream per direction, primed with the SPDY/3 dictionary.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::collections::HashMap;
use std::sync::OnceLock;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const SETTINGS: u16 = 4;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
const HEADERS: u16 = 8;
const FLAG_FIN: u8 = 0x01;
/// The largest frame accepted (the 24-bit length field allows 16 MiB).
const MAX_FRAME: usize = 16 << 20;
/// The largest DATA payload sent at once.
const CHUNK: usize = 32 * 1024;

/// The SPDY/3 header-compression dictionary (section 2.6.10.1 of the draft): length-prefixed
/// header names and values, then a run of common strings.
pub fn dictionary() -> &'static [u8] {
    static DICT: OnceLock<Vec<u8>> = OnceLock::new();
    DICT.get_or_init(|| {
        let words = [
            "options",
            "head",
            "post",
            "put",
            "delete",
            "trace",
            "accept",
            "accept-charset",
            "accept-encoding",
            "accept-language",
            "accept-ranges",
            "age",
            "allow",
            "authorization",
            "cache-control",
            "connection",
            "content-base",
            "content-encoding",
            "content-language",
            "content-length",
            "content-location",
            "content-md5",
            "content-range",
            "content-type",
            "date",
            "etag",
            "expect",
            "expires",
            "from",
            "host",
            "if-match",
            "if-modified-since",
            "if-none-match",
            "if-range",
            "if-unmodified-since",
            "last-modified",
            "location",
            "max-forwards",
            "pragma",
            "proxy-authenticate",
            "proxy-authorization",
            "range",
            "referer",
            "retry-after",
            "server",
            "te",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "user-agent",
            "vary",
            "via",
            "warning",
            "www-authenticate",
            "method",
            "get",
            "status",
            "200 OK",
            "version",
            "HTTP/1.1",
            "url",
            "public",
            "set-cookie",
            "keep-alive",
            "origin",
        ];
        let tail = concat!(
            "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
            "502504505203 Non-Authoritative Information204 No Content301 Moved Permanently",
            "400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error",
            "501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct ",
            "Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,",
            "image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,",
            "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8",
            "charset=iso-8859-1,utf-,*,enq=0."
        );
        let mut d = Vec::with_capacity(1423);
        for w in words {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(tail.as_bytes());
        d
    })
}

/// A SPDY protocol failure.
#[derive(Debug, thiserror::Error)]
pub enum SpdyError {
    /// The connection failed.
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
    /// The peer broke the protocol.
    #[error("spdy protocol error: {0}")]
    Protocol(String),
}

/// Header blocks: `[u32 count]` then `[u32 len][name][u32 len][value]` per header.
pub fn encode_headers(h: &[(&str, &str)]) -> Vec<u8> {
    let mut out = (h.len() as u32).to_be_bytes().to_vec();
    for (k, v) in h {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k.to_ascii_lowercase().as_bytes());
        out.extend_from_slice(&(v.len() as u32).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    out
}

/// Parses a decompressed header block (names lower-cased; of several values, the first).
pub fn decode_headers(b: &[u8]) -> Result<HashMap<String, String>, SpdyError> {
    let bad = || SpdyError::Protocol("truncated header block".into());
    let mut at = 0usize;
    let u32_at = |at: &mut usize| -> Result<usize, SpdyError> {
        let v = b.get(*at..*at + 4).ok_or_else(bad)?;
        *at += 4;
        Ok(u32::from_be_bytes([v[0], v[1], v[2], v[3]]) as usize)
    };
    let n = u32_at(&mut at)?;
    let mut out = HashMap::new();
    for _ in 0..n {
        let len = u32_at(&mut at)?;
        let name = b.get(at..at + len).ok_or_else(bad)?;
        at += len;
        let len = u32_at(&mut at)?;
        let value = b.get(at..at + len).ok_or_else(bad)?;
        at += len;
        let value = value.split(|c| *c == 0).next().unwrap_or_default();
        out.insert(
            String::from_utf8_lossy(name).to_ascii_lowercase(),
            String::from_utf8_lossy(value).into_owned(),
        );
    }
    Ok(out)
}

/// The compressing side of header blocks (one zlib stream for the connection).
pub struct HeaderWriter(Compress);

impl Default for HeaderWriter {
    fn default() -> Self {
        let mut c = Compress::new(Compression::default(), true);
        // Priming is optional for the reader; a failure only costs compression.
        let _ = c.set_dictionary(dictionary());
        HeaderWriter(c)
    }
}

impl HeaderWriter {
    /// Compresses one block, flushed so the peer can decode it alone.
    pub fn compress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.0
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Protocol(format!("compressing headers: {e}")))?;
            let done = (self.0.total_in() - start) as usize == block.len();
            // A sync flush is complete when output room was left over.
            if done && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The decompressing side of header blocks.
pub struct HeaderReader(Decompress);

impl Default for HeaderReader {
    fn default() -> Self {
        HeaderReader(Decompress::new(true))
    }
}

impl HeaderReader {
    /// Decompresses one block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() * 4 + 256);
        let start = self.0.total_in();
        loop {
            let consumed = (self.0.total_in() - start) as usize;
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            if out.len() > MAX_FRAME {
                return Err(SpdyError::Protocol("header block too large".into()));
            }
            match self
                .0
                .decompress_vec(&block[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => return Ok(out),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.0
                        .set_dictionary(dictionary())
                        .map_err(|e| SpdyError::Protocol(format!("header dictionary: {e}")))?;
                }
                Err(e) => return Err(SpdyError::Protocol(format!("decompressing headers: {e}"))),
            }
            let consumed = (self.0.total_in() - start) as usize;
            if consumed == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

enum Out {
    Reply(u32),
    Data { id: u32, fin: bool, data: Bytes },
    Ping(u32),
    Reset(u32),
    GoAway,
}

/// The sending half of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
}

impl StreamWriter {
    /// Sends `data` (in frames of at most 32 KiB); false once the connection is gone.
    pub async fn write(&self, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            let frame = Out::Data {
                id: self.id,
                fin: false,
                data: Bytes::copy_from_slice(chunk),
            };
            if self.tx.send(frame).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Closes this direction of the stream (FIN).
    pub async fn close(&self) {
        let _ = self
            .tx
            .send(Out::Data {
                id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
    }

    /// Resets the stream.
    pub async fn reset(&self) {
        let _ = self.tx.send(Out::Reset(self.id)).await;
    }
}

/// A stream the client opened.
pub struct Stream {
    /// Its id.
    pub id: u32,
    /// Its headers (names lower-cased).
    pub headers: HashMap<String, String>,
    /// What the client sends on it; ends at its FIN.
    pub incoming: mpsc::Receiver<Bytes>,
    /// The server's side of it.
    pub writer: StreamWriter,
}

/// A server-side SPDY connection.
pub struct Connection {
    accept: mpsc::Receiver<Stream>,
    tx: mpsc::Sender<Out>,
    writer: tokio::task::JoinHandle<()>,
    reader: tokio::task::JoinHandle<()>,
}

impl Connection {
    /// Serves SPDY on `io` (an upgraded HTTP connection, or a WebSocket tunnel).
    pub fn serve<T>(io: T) -> Connection
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<Out>(64);
        let (accept_tx, accept) = mpsc::channel::<Stream>(16);
        let writer = tokio::spawn(write_loop(w, rx));
        let reader = tokio::spawn({
            let tx = tx.clone();
            async move {
                if let Err(e) = read_loop(r, tx, accept_tx).await {
                    tracing::debug!(error = %e, "spdy connection ended");
                }
            }
        });
        Connection {
            accept,
            tx,
            writer,
            reader,
        }
    }

    /// The next stream the client opens (`None` once the connection is over).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.accept.recv().await
    }

    /// Says goodbye and waits until everything queued is written.
    pub async fn close(self) {
        let _ = self.tx.send(Out::GoAway).await;
        drop(self.tx);
        self.reader.abort();
        let _ = self.writer.await;
    }
}

fn control(ty: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + payload.len());
    f.extend_from_slice(&(0x8000u16 | 3).to_be_bytes());
    f.extend_from_slice(&ty.to_be_bytes());
    let len = payload.len() as u32;
    f.push(flags);
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.extend_from_slice(payload);
    f
}

async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<Out>) {
    let mut headers = HeaderWriter::default();
    while let Some(out) = rx.recv().await {
        let frame = match out {
            Out::Reply(id) => {
                let Ok(block) = headers.compress(&encode_headers(&[])) else {
                    return;
                };
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&block);
                control(SYN_REPLY, 0, &p)
            }
            Out::Data { id, fin, data } => {
                let mut f = Vec::with_capacity(8 + data.len());
                f.extend_from_slice(&(id & 0x7fff_ffff).to_be_bytes());
                f.push(if fin { FLAG_FIN } else { 0 });
                f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
                f.extend_from_slice(&data);
                f
            }
            Out::Ping(id) => control(PING, 0, &id.to_be_bytes()),
            Out::Reset(id) => {
                let mut p = id.to_be_bytes().to_vec();
                p.extend_from_slice(&5u32.to_be_bytes()); // CANCEL
                control(RST_STREAM, 0, &p)
            }
            Out::GoAway => {
                let _ = w.write_all(&control(GOAWAY, 0, &[0; 8])).await;
                let _ = w.flush().await;
                let _ = w.shutdown().await;
                return;
            }
        };
        if w.write_all(&frame).await.is_err() || w.flush().await.is_err() {
            return;
        }
    }
    let _ = w.shutdown().await;
}

async fn read_loop(
    mut r: impl AsyncRead + Unpin,
    tx: mpsc::Sender<Out>,
    accept: mpsc::Sender<Stream>,
) -> Result<(), SpdyError> {
    let mut headers = HeaderReader::default();
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut head = [0u8; 8];
    loop {
        match r.read_exact(&mut head).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        let flags = head[4];
        let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
        if len > MAX_FRAME {
            return Err(SpdyError::Protocol(format!("frame of {len} bytes")));
        }
        let mut payload = vec![0u8; len];
        r.read_exact(&mut payload).await?;
        let word = |at: usize| -> Result<u32, SpdyError> {
            payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .ok_or_else(|| SpdyError::Protocol("short control frame".into()))
        };
        if head[0] & 0x80 == 0 {
            let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
            if let Some(s) = streams.get(&id) {
                if !payload.is_empty() && s.send(Bytes::from(payload)).await.is_err() {
                    // Nobody reads this stream any more.
                    streams.remove(&id);
                }
            }
            if flags & FLAG_FIN != 0 {
                streams.remove(&id);
            }
            continue;
        }
        let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
        if version != 3 {
            return Err(SpdyError::Protocol(format!("SPDY version {version}")));
        }
        match u16::from_be_bytes([head[2], head[3]]) {
            SYN_STREAM => {
                let id = word(0)?;
                let block = payload
                    .get(10..)
                    .ok_or_else(|| SpdyError::Protocol("short SYN_STREAM".into()))?;
                let h = decode_headers(&headers.decompress(block)?)?;
                let (in_tx, incoming) = mpsc::channel(64);
                if flags & FLAG_FIN == 0 {
                    streams.insert(id, in_tx);
                }
                if tx.send(Out::Reply(id)).await.is_err() {
                    return Ok(());
                }
                let stream = Stream {
                    id,
                    headers: h,
                    incoming,
                    writer: StreamWriter { id, tx: tx.clone() },
                };
                if accept.send(stream).await.is_err() {
                    return Ok(());
                }
            }
            SYN_REPLY | HEADERS => {
                // Kept in step with the peer's compressor, then ignored.
                if let Some(block) = payload.get(4..) {
                    headers.decompress(block)?;
                }
            }
            RST_STREAM => {
                streams.remove(&word(0)?);
            }
            PING => {
                let _ = tx.send(Out::Ping(word(0)?)).await;
            }
            GOAWAY => return Ok(()),
            SETTINGS => {}
            _ => {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.ends_with(b"enq=0."));
        // adler32 of the dictionary, as zlib announces it in a primed stream's header.
        let (mut a, mut b) = (1u32, 0u32);
        for x in d {
            a = (a + u32::from(*x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn header_blocks_round_trip_through_one_zlib_stream() {
        let (mut w, mut r) = (HeaderWriter::default(), HeaderReader::default());
        for i in 0..5 {
            let port = i.to_string();
            let block =
                encode_headers(&[("streamType", "data"), ("port", &port), ("requestID", "0")]);
            let got = decode_headers(&r.decompress(&w.compress(&block).unwrap()).unwrap()).unwrap();
            assert_eq!(got["streamtype"], "data");
            assert_eq!(got["port"], port);
            assert_eq!(got["requestid"], "0");
        }
        assert!(decode_headers(&[0, 0, 0, 1, 0, 0, 0, 9, b'x']).is_err());
    }

    /// The client side, enough for tests: opens streams and exchanges data.
    pub(crate) struct TestClient<T> {
        io: T,
        headers: HeaderWriter,
        replies: HeaderReader,
        next: u32,
    }

    impl<T: AsyncRead + AsyncWrite + Unpin> TestClient<T> {
        pub(crate) fn new(io: T) -> Self {
            TestClient {
                io,
                headers: HeaderWriter::default(),
                replies: HeaderReader::default(),
                next: 1,
            }
        }

        pub(crate) async fn open(&mut self, h: &[(&str, &str)], fin: bool) -> u32 {
            let id = self.next;
            self.next += 2;
            let mut p = id.to_be_bytes().to_vec();
            p.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            p.extend_from_slice(&self.headers.compress(&encode_headers(h)).unwrap());
            self.io
                .write_all(&control(SYN_STREAM, if fin { FLAG_FIN } else { 0 }, &p))
                .await
                .unwrap();
            id
        }

        pub(crate) async fn send(&mut self, id: u32, data: &[u8], fin: bool) {
            let mut f = id.to_be_bytes().to_vec();
            f.push(if fin { FLAG_FIN } else { 0 });
            f.extend_from_slice(&(data.len() as u32).to_be_bytes()[1..]);
            f.extend_from_slice(data);
            self.io.write_all(&f).await.unwrap();
        }

        /// The next frame: `Some((stream, data, fin))` for DATA, replies skipped; `None` at
        /// GOAWAY or the end.
        pub(crate) async fn next(&mut self) -> Option<(u32, Vec<u8>, bool)> {
            loop {
                let mut head = [0u8; 8];
                self.io.read_exact(&mut head).await.ok()?;
                let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
                let mut p = vec![0u8; len];
                self.io.read_exact(&mut p).await.ok()?;
                if head[0] & 0x80 == 0 {
                    let id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
                    return Some((id, p, head[4] & FLAG_FIN != 0));
                }
                match u16::from_be_bytes([head[2], head[3]]) {
                    SYN_REPLY => {
                        self.replies.decompress(&p[4..]).unwrap();
                    }
                    GOAWAY => return None,
                    _ => {}
                }
            }
        }
    }

    #[tokio::test]
    async fn streams_carry_data_both_ways() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let mut conn = Connection::serve(a);
        let mut client = TestClient::new(b);
        let id = client.open(&[("streamType", "data")], false).await;
        let mut s = conn.accept().await.unwrap();
        assert_eq!(s.headers["streamtype"], "data");
        client.send(id, b"ping", true).await;
        assert_eq!(
            s.incoming.recv().await.unwrap(),
            Bytes::from_static(b"ping")
        );
        assert!(
            s.incoming.recv().await.is_none(),
            "FIN ends the incoming side"
        );
        s.writer.write(b"pong").await;
        s.writer.close().await;
        assert_eq!(client.next().await.unwrap(), (id, b"pong".to_vec(), false));
        assert_eq!(client.next().await.unwrap(), (id, Vec::new(), true));
        conn.close().await;
        assert!(client.next().await.is_none());
    }
}
