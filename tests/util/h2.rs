//! Raw HTTP/2 frames for tests that need a client no library would be
//! (one that resets in a loop, or stops reading).

/// One HTTP/2 frame: length, type, flags, stream, payload (RFC 9113 §4.1).
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// The client preface and a SETTINGS frame with `settings` (id, value).
pub fn preface_with(settings: &[(u16, u32)]) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    out.extend(frame(4, 0, 0, &payload));
    out
}

/// The client preface and an empty SETTINGS frame.
pub fn preface() -> Vec<u8> {
    preface_with(&[])
}

/// `GET path` on https://localhost as an HPACK block: indexed :method GET
/// and :scheme https, literal :path and :authority (RFC 7541 appendix A,
/// no Huffman coding). `path` is shorter than 127 bytes.
pub fn get(path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x87, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    block
}
