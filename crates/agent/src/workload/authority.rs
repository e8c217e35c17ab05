//! Replaces an HTTP/2 `:authority` that is not a valid URI authority with
//! `localhost` before the bytes reach the HTTP/2 server.
//!
//! gRPC core 1.57 and later (grpcio for Python, so py-spiffe) sends the
//! percent-encoded socket path as `:authority` on Unix sockets, and grpc-java
//! sends the raw path. The `h2` crate under tonic rejects such a request
//! with a stream reset (PROTOCOL_ERROR) before any handler runs, so those
//! SPIFFE clients could not reach the Workload API at all. The authority
//! means nothing on a Unix socket, so replacing it loses nothing.
//!
//! Every header block of the connection is decoded with HPACK and encoded
//! again, because the server's HPACK decoder must follow this encoder's
//! dynamic table. Frames of other types are copied unchanged.

use std::fmt;

use loona_hpack::{Decoder, Encoder};

/// The HTTP/2 client connection preface (RFC 9113, section 3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;

const FRAME_HEADERS: u8 = 0x1;
const FRAME_CONTINUATION: u8 = 0x9;

const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// The largest frame payload written: the initial SETTINGS_MAX_FRAME_SIZE,
/// which every HTTP/2 server accepts.
const MAX_FRAME_PAYLOAD: usize = 16_384;

/// The largest header block accepted from a client. Workload API requests
/// carry a handful of short headers.
const MAX_HEADER_BLOCK: usize = 256 * 1024;

/// The authority that replaces an invalid one.
const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// A malformed client byte stream, which closes the connection.
#[derive(Debug)]
pub struct RewriteError(String);

impl fmt::Display for RewriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed HTTP/2 request stream: {}", self.0)
    }
}

impl std::error::Error for RewriteError {}

/// A header block being collected from a HEADERS frame and its
/// CONTINUATION frames.
struct PendingBlock {
    stream_id: u32,
    end_stream: bool,
    fragment: Vec<u8>,
}

/// The client-to-server half of one HTTP/2 connection.
pub struct AuthorityRewriter {
    preface_left: usize,
    input: Vec<u8>,
    block: Option<PendingBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
}

impl fmt::Debug for AuthorityRewriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthorityRewriter")
            .field("buffered", &self.input.len())
            .finish_non_exhaustive()
    }
}

impl Default for AuthorityRewriter {
    fn default() -> Self {
        Self {
            preface_left: PREFACE_LEN,
            input: Vec::new(),
            block: None,
            decoder: Decoder::new(),
            encoder: Encoder::new(),
        }
    }
}

impl AuthorityRewriter {
    /// Consumes bytes read from the client and appends the bytes for the
    /// server to `output`. An incomplete frame is kept until the rest
    /// arrives.
    ///
    /// # Errors
    ///
    /// Returns [`RewriteError`] when a header block cannot be decoded, is
    /// too large, or is interrupted by another frame.
    pub fn feed(&mut self, input: &[u8], output: &mut Vec<u8>) -> Result<(), RewriteError> {
        let mut input = input;
        if self.preface_left > 0 {
            let passed = self.preface_left.min(input.len());
            output.extend_from_slice(&input[..passed]);
            self.preface_left -= passed;
            input = &input[passed..];
        }
        self.input.extend_from_slice(input);

        let mut consumed = 0;
        while let Some(frame_len) = complete_frame_len(&self.input[consumed..]) {
            let frame = self.input[consumed..consumed + frame_len].to_vec();
            self.process_frame(&frame, output)?;
            consumed += frame_len;
        }
        self.input.drain(..consumed);
        Ok(())
    }

    fn process_frame(&mut self, frame: &[u8], output: &mut Vec<u8>) -> Result<(), RewriteError> {
        let kind = frame[3];
        let flags = frame[4];
        let stream_id = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[FRAME_HEADER_LEN..];

        match kind {
            FRAME_HEADERS => {
                if self.block.is_some() {
                    return Err(RewriteError("HEADERS frame inside a header block".into()));
                }
                self.block = Some(PendingBlock {
                    stream_id,
                    end_stream: flags & FLAG_END_STREAM != 0,
                    fragment: header_fragment(flags, payload)?.to_vec(),
                });
            }
            FRAME_CONTINUATION => {
                let block = self.block.as_mut().ok_or_else(|| {
                    RewriteError("CONTINUATION frame without a HEADERS frame".into())
                })?;
                if block.stream_id != stream_id {
                    return Err(RewriteError("CONTINUATION frame for another stream".into()));
                }
                block.fragment.extend_from_slice(payload);
            }
            _ => {
                if self.block.is_some() {
                    return Err(RewriteError("frame inside a header block".into()));
                }
                output.extend_from_slice(frame);
                return Ok(());
            }
        }

        let too_large = self
            .block
            .as_ref()
            .is_some_and(|block| block.fragment.len() > MAX_HEADER_BLOCK);
        if too_large {
            return Err(RewriteError(format!(
                "header block larger than {MAX_HEADER_BLOCK} bytes"
            )));
        }
        if flags & FLAG_END_HEADERS != 0
            && let Some(block) = self.block.take()
        {
            self.rewrite_block(&block, output)?;
        }
        Ok(())
    }

    /// Decodes a whole header block, replaces an invalid `:authority`, and
    /// writes the block again as HEADERS and CONTINUATION frames.
    fn rewrite_block(
        &mut self,
        block: &PendingBlock,
        output: &mut Vec<u8>,
    ) -> Result<(), RewriteError> {
        let mut headers = self
            .decoder
            .decode(&block.fragment)
            .map_err(|e| RewriteError(format!("invalid HPACK header block: {e}")))?;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !is_valid_authority(value) {
                *value = REPLACEMENT_AUTHORITY.to_vec();
            }
        }

        let encoded = self
            .encoder
            .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut chunks = encoded.chunks(MAX_FRAME_PAYLOAD).peekable();
        let mut kind = FRAME_HEADERS;
        let mut flags = if block.end_stream { FLAG_END_STREAM } else { 0 };
        if chunks.peek().is_none() {
            write_frame(output, kind, flags | FLAG_END_HEADERS, block.stream_id, &[]);
        }
        while let Some(chunk) = chunks.next() {
            if chunks.peek().is_none() {
                flags |= FLAG_END_HEADERS;
            }
            write_frame(output, kind, flags, block.stream_id, chunk);
            kind = FRAME_CONTINUATION;
            flags = 0;
        }
        Ok(())
    }
}

/// Returns the length of the first frame in `bytes` when all of it is
/// there.
fn complete_frame_len(bytes: &[u8]) -> Option<usize> {
    if bytes.len() < FRAME_HEADER_LEN {
        return None;
    }
    let payload_len =
        usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
    let frame_len = FRAME_HEADER_LEN + payload_len;
    (bytes.len() >= frame_len).then_some(frame_len)
}

/// Returns the header block fragment of a HEADERS frame payload, without
/// its padding and priority fields.
fn header_fragment(flags: u8, payload: &[u8]) -> Result<&[u8], RewriteError> {
    let mut fragment = payload;
    let mut padding = 0;
    if flags & FLAG_PADDED != 0 {
        let (&pad_len, rest) = fragment
            .split_first()
            .ok_or_else(|| RewriteError("PADDED HEADERS frame without a pad length".into()))?;
        padding = usize::from(pad_len);
        fragment = rest;
    }
    if flags & FLAG_PRIORITY != 0 {
        fragment = fragment
            .get(5..)
            .ok_or_else(|| RewriteError("HEADERS frame priority fields are truncated".into()))?;
    }
    fragment
        .get(..fragment.len().saturating_sub(padding))
        .filter(|_| padding <= fragment.len())
        .ok_or_else(|| RewriteError("HEADERS frame padding exceeds the payload".into()))
}

fn write_frame(output: &mut Vec<u8>, kind: u8, flags: u8, stream_id: u32, payload: &[u8]) {
    let len = payload.len();
    output.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    output.extend_from_slice(&stream_id.to_be_bytes());
    output.extend_from_slice(payload);
}

/// Checks that `value` parses as a URI authority, as `h2` does.
fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn request_headers(authority: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        vec![
            (b":method".to_vec(), b"POST".to_vec()),
            (b":scheme".to_vec(), b"http".to_vec()),
            (
                b":path".to_vec(),
                b"/SpiffeWorkloadAPI/FetchX509SVID".to_vec(),
            ),
            (b":authority".to_vec(), authority.to_vec()),
            (b"workload.spiffe.io".to_vec(), b"true".to_vec()),
        ]
    }

    fn headers_frame(encoder: &mut Encoder<'_>, stream_id: u32, authority: &[u8]) -> Vec<u8> {
        let headers = request_headers(authority);
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let mut frame = Vec::new();
        write_frame(
            &mut frame,
            FRAME_HEADERS,
            FLAG_END_HEADERS,
            stream_id,
            &block,
        );
        frame
    }

    /// Decodes every HEADERS block in a rewritten byte stream.
    fn decode_output(output: &[u8]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut decoder = Decoder::new();
        let mut rest = &output[PREFACE.len()..];
        let mut blocks = Vec::new();
        let mut fragment = Vec::new();
        while let Some(len) = complete_frame_len(rest) {
            let (kind, flags) = (rest[3], rest[4]);
            if kind == FRAME_HEADERS || kind == FRAME_CONTINUATION {
                fragment.extend_from_slice(&rest[FRAME_HEADER_LEN..len]);
                if flags & FLAG_END_HEADERS != 0 {
                    blocks.push(decoder.decode(&fragment).unwrap());
                    fragment.clear();
                }
            }
            rest = &rest[len..];
        }
        blocks
    }

    fn authority_of(headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        headers
            .iter()
            .find(|(n, _)| n.as_slice() == b":authority")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[test]
    fn rewriter_replaces_socket_path_authority() {
        let mut encoder = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&mut encoder, 1, b"%2Ftmp%2Fagent%2Fapi.sock"));
        input.extend(headers_frame(&mut encoder, 3, b"/tmp/agent/api.sock"));

        let mut output = Vec::new();
        AuthorityRewriter::default()
            .feed(&input, &mut output)
            .unwrap();

        let blocks = decode_output(&output);
        assert_eq!(blocks.len(), 2);
        assert_eq!(authority_of(&blocks[0]), b"localhost");
        assert_eq!(authority_of(&blocks[1]), b"localhost");
        assert_eq!(blocks[0][2].1, b"/SpiffeWorkloadAPI/FetchX509SVID");
    }

    #[test]
    fn rewriter_keeps_valid_authority() {
        let mut encoder = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&mut encoder, 1, b"localhost:1234"));

        let mut output = Vec::new();
        AuthorityRewriter::default()
            .feed(&input, &mut output)
            .unwrap();

        assert_eq!(authority_of(&decode_output(&output)[0]), b"localhost:1234");
    }

    #[test]
    fn rewriter_handles_input_split_at_every_byte() {
        let mut encoder = Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(headers_frame(&mut encoder, 1, b"/tmp/api.sock"));
        let mut data = Vec::new();
        write_frame(&mut data, 0x0, FLAG_END_STREAM, 1, b"payload");
        input.extend(&data);

        let mut rewriter = AuthorityRewriter::default();
        let mut output = Vec::new();
        for byte in &input {
            rewriter
                .feed(std::slice::from_ref(byte), &mut output)
                .unwrap();
        }

        assert_eq!(authority_of(&decode_output(&output)[0]), b"localhost");
        assert!(output.ends_with(&data), "DATA frame is copied unchanged");
    }

    #[test]
    fn rewriter_joins_continuation_frames_and_strips_padding() {
        let mut encoder = Encoder::new();
        let headers = request_headers(b"/tmp/api.sock");
        let block = encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
        let (first, second) = block.split_at(block.len() / 2);
        let mut payload = vec![3u8];
        payload.extend_from_slice(first);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        write_frame(&mut input, FRAME_HEADERS, FLAG_PADDED, 1, &payload);
        write_frame(&mut input, FRAME_CONTINUATION, FLAG_END_HEADERS, 1, second);

        let mut output = Vec::new();
        AuthorityRewriter::default()
            .feed(&input, &mut output)
            .unwrap();

        assert_eq!(authority_of(&decode_output(&output)[0]), b"localhost");
    }

    #[test]
    fn rewriter_rejects_frame_inside_header_block() {
        let mut input = PREFACE.to_vec();
        write_frame(&mut input, FRAME_HEADERS, 0, 1, &[0x82]);
        write_frame(&mut input, 0x0, 0, 1, b"data");

        let error = AuthorityRewriter::default()
            .feed(&input, &mut Vec::new())
            .unwrap_err();

        assert!(
            error.to_string().contains("inside a header block"),
            "{error}"
        );
    }
}
