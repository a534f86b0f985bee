//! Frame headers as RFC 6455 §5.2 lays them out, read from a client and written to one.

use super::WsError;

/// Continues a fragmented message.
pub const CONTINUATION: u8 = 0x0;
/// A text message (or its first fragment).
pub const TEXT: u8 = 0x1;
/// A binary message (or its first fragment).
pub const BINARY: u8 = 0x2;
/// Ends the connection.
pub const CLOSE: u8 = 0x8;
/// Asks for a pong.
pub const PING: u8 = 0x9;
/// Answers a ping.
pub const PONG: u8 = 0xA;

/// Longest header a client may send: two bytes, a 64-bit length and the mask.
pub const MAX_CLIENT_HEAD: usize = 14;
/// Longest header the server sends: two bytes and a 64-bit length (no mask).
pub const MAX_SERVER_HEAD: usize = 10;
/// Longest payload of a control frame (§5.5).
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// One client frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Last frame of its message.
    pub fin: bool,
    /// What the frame is ([`TEXT`], [`PING`], …).
    pub opcode: u8,
    /// The client's masking key.
    pub mask: [u8; 4],
    /// Payload bytes that follow the header.
    pub len: u64,
    /// Bytes the header itself took.
    pub size: usize,
}

impl Head {
    /// Reads a client frame's header from the start of `bytes`: `Ok(None)` while more
    /// bytes are needed, an error for a header no client may send (RFC 6455 §5.1–5.5).
    pub fn parse(bytes: &[u8]) -> Result<Option<Head>, WsError> {
        let [first, second, ..] = *bytes else {
            return Ok(None);
        };
        if first & 0x70 != 0 {
            return Err(WsError::Protocol("a reserved bit is set"));
        }
        if second & 0x80 == 0 {
            return Err(WsError::Protocol("a client frame is not masked"));
        }
        let (extended, len) = match second & 0x7F {
            126 => (2, None),
            127 => (8, None),
            short => (0, Some(u64::from(short))),
        };
        let size = 2 + extended + 4;
        if bytes.len() < size {
            return Ok(None);
        }
        let len = len.unwrap_or_else(|| {
            let mut be = [0u8; 8];
            be[8 - extended..].copy_from_slice(&bytes[2..2 + extended]);
            u64::from_be_bytes(be)
        });
        let head = Head {
            fin: first & 0x80 != 0,
            opcode: first & 0x0F,
            mask: bytes[2 + extended..size]
                .try_into()
                .expect("the mask is four bytes"),
            len,
            size,
        };
        match head.opcode {
            CONTINUATION | TEXT | BINARY => {}
            CLOSE | PING | PONG if !head.fin => {
                return Err(WsError::Protocol("a control frame is fragmented"));
            }
            CLOSE | PING | PONG if head.len > MAX_CONTROL_PAYLOAD => {
                return Err(WsError::Protocol("a control frame is over 125 bytes"));
            }
            CLOSE | PING | PONG => {}
            _ => return Err(WsError::Protocol("the opcode is reserved")),
        }
        Ok(Some(head))
    }
}

/// Undoes the client's masking of a whole payload.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    // Thirty-two bytes at a time, a loop of fixed length that the compiler turns into
    // SIMD XORs: a 2 KB offer is unmasked in about 64 steps.
    const STEP: usize = 32;
    let wide: [u8; STEP] = std::array::from_fn(|i| mask[i % 4]);
    let mut chunks = payload.chunks_exact_mut(STEP);
    for chunk in &mut chunks {
        for (byte, m) in chunk.iter_mut().zip(wide) {
            *byte ^= m;
        }
    }
    // The remainder starts at a multiple of four, where the mask starts over.
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

/// A server frame's header for a final frame of `opcode` with `len` payload bytes, and
/// how many of its bytes are used.
pub fn server_head(opcode: u8, len: usize) -> ([u8; MAX_SERVER_HEAD], u8) {
    let mut head = [0u8; MAX_SERVER_HEAD];
    head[0] = 0x80 | opcode;
    let used = if len < 126 {
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    (head, used)
}

/// A frame as a client sends it: masked (RFC 6455 §5.3), with FIN set when `fin`. For
/// tests and the load generator, which speak raw frames; the mask is fixed, since nothing
/// here is secret.
pub fn client_frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xFA, 0x21, 0x3D];
    let mut bytes = Vec::with_capacity(MAX_CLIENT_HEAD + payload.len());
    bytes.push(u8::from(fin) << 7 | opcode);
    match payload.len() {
        n if n < 126 => bytes.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            bytes.push(0x80 | 126);
            bytes.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            bytes.push(0x80 | 127);
            bytes.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    bytes.extend_from_slice(&MASK);
    bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    bytes
}

/// Whether a client may send `code` in a close frame: the codes RFC 6455 §7.4 defines for
/// the wire and those registered or private (3000–4999). Not 1005, 1006 or 1015, which
/// only report a close locally, nor a reserved or out-of-range one.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, len_bytes: &[u8]) -> Vec<u8> {
        let mut bytes = vec![first];
        bytes.extend_from_slice(len_bytes);
        bytes[1] |= 0x80;
        bytes.extend_from_slice(&[1, 2, 3, 4]);
        bytes
    }

    #[test]
    fn headers_of_each_length_form_parse_once_complete() {
        let short = masked(0x81, &[5]);
        assert_eq!(Head::parse(&short[..5]).unwrap(), None);
        let head = Head::parse(&short).unwrap().unwrap();
        assert_eq!(
            (head.fin, head.opcode, head.len, head.size),
            (true, TEXT, 5, 6)
        );
        assert_eq!(head.mask, [1, 2, 3, 4]);

        let medium = masked(0x01, &[126, 0x08, 0x00]);
        let head = Head::parse(&medium).unwrap().unwrap();
        assert_eq!((head.fin, head.len, head.size), (false, 2048, 8));

        let long = masked(0x82, &[127, 0, 0, 0, 1, 0, 0, 0, 0]);
        assert_eq!(Head::parse(&long[..13]).unwrap(), None);
        let head = Head::parse(&long).unwrap().unwrap();
        assert_eq!((head.opcode, head.len, head.size), (BINARY, 1 << 32, 14));
    }

    #[test]
    fn headers_no_client_may_send_are_refused() {
        let refused = |bytes: Vec<u8>| matches!(Head::parse(&bytes), Err(WsError::Protocol(_)));
        assert!(refused(masked(0xC1, &[0])), "a reserved bit");
        assert!(refused(vec![0x81, 0x00]), "an unmasked frame");
        assert!(refused(masked(0x83, &[0])), "a reserved data opcode");
        assert!(refused(masked(0x8B, &[0])), "a reserved control opcode");
        assert!(refused(masked(0x09, &[0])), "a fragmented ping");
        assert!(refused(masked(0x89, &[126, 0, 126])), "a long ping");
        assert!(
            !refused(masked(0x89, &[125])),
            "a ping of 125 bytes is fine"
        );
    }

    #[test]
    fn unmasking_restores_every_length_and_alignment() {
        let mask = [0xA1, 0xB2, 0xC3, 0xD4];
        for len in [0, 1, 7, 8, 9, 31, 32, 33, 63, 2048, 2051] {
            let plain: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let mut wire: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut wire, mask);
            assert_eq!(wire, plain, "{len} bytes");
        }
    }

    #[test]
    fn server_heads_use_the_shortest_length_form() {
        assert_eq!(
            server_head(TEXT, 125),
            ([0x81, 125, 0, 0, 0, 0, 0, 0, 0, 0], 2)
        );
        let (head, used) = server_head(TEXT, 2048);
        assert_eq!((&head[..used as usize], used), (&[0x81, 126, 8, 0][..], 4));
        let (head, used) = server_head(BINARY, 70_000);
        assert_eq!(
            &head[..used as usize],
            &[0x82, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]
        );
    }

    #[test]
    fn close_codes_follow_rfc_6455() {
        for code in [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1013, 3000, 4999] {
            assert!(close_code_allowed(code), "{code}");
        }
        for code in [
            0, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000, 65535,
        ] {
            assert!(!close_code_allowed(code), "{code}");
        }
    }
}
