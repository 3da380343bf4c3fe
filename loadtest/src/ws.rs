//! A WebSocket client frame reader (RFC 6455), just enough for a subscriber.
//!
//! [`FrameReader`] decodes the server's frames incrementally: text, binary and continuation
//! payloads go to a callback as they arrive (no per-message buffer), pings are collected so the
//! subscriber can answer them with [`pong`], and a close frame is reported.

use crate::http::ProtocolError;

/// Control frames carry at most this many payload bytes.
const MAX_CONTROL: usize = 125;

/// What the reader saw besides data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Control {
    /// Payloads of pings received (answer each with a pong).
    pub pings: Vec<Vec<u8>>,
    /// A close frame was received.
    pub closed: bool,
    /// Data frames (text, binary, continuation) completed.
    pub data_frames: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Collecting the frame header (2 to 14 bytes).
    Header,
    /// Inside a payload: opcode, bytes left, mask key and position (masked frames only).
    Payload { opcode: u8, left: u64, mask: Mask },
}

/// Incremental frame reader.
#[derive(Debug)]
pub struct FrameReader {
    state: State,
    header: Vec<u8>,
    control: Vec<u8>,
    unmasked: Vec<u8>,
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader {
            state: State::Header,
            header: Vec::with_capacity(14),
            control: Vec::new(),
            unmasked: Vec::new(),
        }
    }
}

impl FrameReader {
    /// Decodes all of `input`; data payload bytes go to `data`, control events to `control`.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        control: &mut Control,
        data: &mut impl FnMut(&[u8]),
    ) -> Result<(), ProtocolError> {
        while !input.is_empty() {
            match self.state.clone() {
                State::Header => {
                    let needed = header_len(&self.header);
                    let take = (needed - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if self.header.len() < header_len(&self.header) {
                        continue;
                    }
                    let (opcode, left, mask) = parse_header(&self.header)?;
                    self.header.clear();
                    if opcode >= 8 && left > MAX_CONTROL as u64 {
                        return Err(ProtocolError("control frame too long".into()));
                    }
                    self.state = State::Payload { opcode, left, mask };
                    self.control.clear();
                    if left == 0 {
                        self.finish_frame(opcode, control);
                    }
                }
                State::Payload { opcode, left, mask } => {
                    let take = left.min(input.len() as u64) as usize;
                    let piece = &input[..take];
                    input = &input[take..];
                    let mut mask = mask;
                    let bytes: &[u8] = match &mut mask {
                        Some((key, pos)) => {
                            self.unmasked.clear();
                            self.unmasked.extend(piece.iter().map(|b| {
                                let out = b ^ key[*pos % 4];
                                *pos += 1;
                                out
                            }));
                            &self.unmasked
                        }
                        None => piece,
                    };
                    if opcode >= 8 {
                        self.control.extend_from_slice(bytes);
                    } else {
                        data(bytes);
                    }
                    let left = left - take as u64;
                    self.state = State::Payload { opcode, left, mask };
                    if left == 0 {
                        self.finish_frame(opcode, control);
                    }
                }
            }
        }
        Ok(())
    }

    fn finish_frame(&mut self, opcode: u8, control: &mut Control) {
        match opcode {
            0x8 => control.closed = true,
            0x9 => control.pings.push(std::mem::take(&mut self.control)),
            0x0..=0x2 => control.data_frames += 1,
            _ => {}
        }
        self.state = State::Header;
    }
}

/// Bytes of the header given its first bytes (2 until the length byte is known).
fn header_len(header: &[u8]) -> usize {
    let Some(&second) = header.get(1) else {
        return 2;
    };
    let masked = if second & 0x80 != 0 { 4 } else { 0 };
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    2 + extended + masked
}

/// A payload's mask key and the position within it.
type Mask = Option<([u8; 4], usize)>;

fn parse_header(header: &[u8]) -> Result<(u8, u64, Mask), ProtocolError> {
    let (first, second) = match header {
        [first, second, ..] => (*first, *second),
        _ => return Err(ProtocolError("short frame header".into())),
    };
    let opcode = first & 0x0f;
    let mut at = 2;
    let left = match second & 0x7f {
        126 => {
            at += 2;
            u64::from(u16::from_be_bytes([header[2], header[3]]))
        }
        127 => {
            at += 8;
            let mut raw = [0u8; 8];
            raw.copy_from_slice(&header[2..10]);
            u64::from_be_bytes(raw)
        }
        n => u64::from(n),
    };
    let mask = if second & 0x80 != 0 {
        let mut key = [0u8; 4];
        key.copy_from_slice(&header[at..at + 4]);
        Some((key, 0))
    } else {
        None
    };
    Ok((opcode, left, mask))
}

/// A masked client frame with `opcode` and `payload` (at most 125 bytes are sent).
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL)];
    let key = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | opcode);
    frame.push(0x80 | payload.len() as u8);
    frame.extend_from_slice(&key);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    frame
}

/// The pong answering a ping with `payload`.
pub fn pong(payload: &[u8]) -> Vec<u8> {
    client_frame(0xA, payload)
}

/// A normal close (1000) from the client.
pub fn close() -> Vec<u8> {
    client_frame(0x8, &1000u16.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut frame = vec![0x80 | opcode];
        match payload.len() {
            n if n < 126 => frame.push(n as u8),
            n if n < 65536 => {
                frame.push(126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        frame.extend_from_slice(payload);
        frame
    }

    #[test]
    fn reads_frames_in_any_pieces() {
        let big = vec![b'y'; 70_000];
        let mut input = server_frame(1, b"hello");
        input.extend(server_frame(9, b"p"));
        input.extend(server_frame(1, &vec![b'z'; 300]));
        input.extend(server_frame(1, &big));
        input.extend(server_frame(8, &1000u16.to_be_bytes()));
        for step in [1, 2, 3, 7, 100, 5000, input.len()] {
            let mut reader = FrameReader::default();
            let mut control = Control::default();
            let mut data = Vec::new();
            for piece in input.chunks(step) {
                reader
                    .feed(piece, &mut control, &mut |b: &[u8]| {
                        data.extend_from_slice(b)
                    })
                    .expect("valid frames");
            }
            assert_eq!(data.len(), 5 + 300 + 70_000, "step {step}");
            assert!(data.starts_with(b"helloz"));
            assert_eq!(control.pings, vec![b"p".to_vec()]);
            assert!(control.closed);
            assert_eq!(control.data_frames, 3);
        }
    }

    #[test]
    fn masked_frames_are_unmasked() {
        let frame = client_frame(1, b"abc");
        let mut reader = FrameReader::default();
        let mut control = Control::default();
        let mut data = Vec::new();
        reader
            .feed(&frame, &mut control, &mut |b: &[u8]| {
                data.extend_from_slice(b)
            })
            .expect("valid frame");
        assert_eq!(data, b"abc");
    }
}
