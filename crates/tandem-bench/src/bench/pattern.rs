//! The bytes a connection sends, and the check of the bytes it gets back.
//!
//! Every message carries its connection's stamp and its sequence number, and
//! the rest of it is a slice of a random block at an offset that moves with
//! the sequence. So an echo that is corrupted, shortened, repeated, reordered
//! or crossed with another connection's bytes does not match. Making and
//! checking a message is a copy and a compare: no allocation, no per-byte
//! arithmetic on the common path.

use std::sync::Arc;

/// Length of the random block, a prime so that message offsets do not
/// repeat with any message size.
const BLOCK: usize = 65_521;
/// Bytes at the head of each message that carry the stamp.
const STAMP: usize = 8;

/// What a mismatch looked like, for the error report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Index of the message, counted from 0 on its connection.
    pub message: u64,
    /// Offset of the first wrong byte in that message; the message's size
    /// where the newline owed after it did not come.
    pub offset: usize,
}

/// Said wherever a newline the bench expects does not come.
pub(crate) const APPEND_NEWLINE_HINT: &str = "is the server run with --append-newline?";

/// The newlines a server appends to what it echoes (`serve
/// --append-newline`: one after each chunk it reads), as the verifier
/// expects them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Newlines {
    /// None: a `\n` is a payload byte like any other.
    None,
    /// One after each message, which counts as echoed only once its
    /// newline has come: with one message in flight, the server's last
    /// chunk of it ends where the message does. More may fall inside a
    /// message read in several chunks.
    AfterEach,
    /// Anywhere between the server's chunks, none required: with several
    /// messages in flight, one chunk may hold several of them.
    Between,
}

/// The random block shared by every connection of a run.
#[derive(Debug, Clone)]
pub struct Block {
    bytes: Arc<[u8]>,
    newline_safe: bool,
}

impl Block {
    /// A block for messages of up to `max_message` bytes. With
    /// `newline_safe`, no byte is `\n`, so that newlines a server inserts
    /// can be told apart from payload.
    pub fn new(max_message: usize, seed: u64, newline_safe: bool) -> Block {
        let mut state = seed | 1;
        let bytes = (0..BLOCK + max_message)
            .map(|_| {
                let byte = (next(&mut state) >> 56) as u8;
                if newline_safe { byte | 0x80 } else { byte }
            })
            .collect();
        Block {
            bytes,
            newline_safe,
        }
    }

    /// The pattern of connection number `id`.
    pub fn pattern(&self, id: u64, message_size: usize) -> Pattern {
        let mut state = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        let key = next(&mut state);
        Pattern {
            block: self.clone(),
            key,
            start: (key % BLOCK as u64) as usize,
            size: message_size,
        }
    }
}

/// xorshift64*: fast, and good enough to make payloads look random.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

/// The messages of one connection.
#[derive(Debug, Clone)]
pub struct Pattern {
    block: Block,
    key: u64,
    start: usize,
    size: usize,
}

impl Pattern {
    /// Size of each message.
    pub fn message_size(&self) -> usize {
        self.size
    }

    fn stamp(&self, message: u64) -> [u8; STAMP] {
        let mut stamp = (message ^ self.key).to_le_bytes();
        if self.block.newline_safe {
            for byte in &mut stamp {
                *byte |= 0x80;
            }
        }
        stamp
    }

    fn body(&self, message: u64) -> &[u8] {
        let offset = (self.start as u64 + message.wrapping_mul(self.size as u64)) % BLOCK as u64;
        let offset = offset as usize;
        &self.block.bytes[offset..offset + self.size]
    }

    /// Writes message number `message` into `out` (exactly
    /// [`message_size`](Self::message_size) bytes).
    pub fn write(&self, message: u64, out: &mut [u8]) {
        out.copy_from_slice(self.body(message));
        let stamp = self.stamp(message);
        let head = STAMP.min(self.size);
        out[..head].copy_from_slice(&stamp[..head]);
    }

    /// True if `data` equals bytes `offset..offset + data.len()` of message
    /// number `message`.
    fn matches(&self, message: u64, offset: usize, data: &[u8]) -> Option<usize> {
        let stamp = self.stamp(message);
        let body = self.body(message);
        let expected = |at: usize| if at < STAMP { stamp[at] } else { body[at] };
        let stamped = STAMP.saturating_sub(offset).min(data.len());
        for (i, &byte) in data[..stamped].iter().enumerate() {
            if byte != expected(offset + i) {
                return Some(offset + i);
            }
        }
        let rest = &data[stamped..];
        let from = offset + stamped;
        if rest != &body[from..from + rest.len()] {
            let wrong = rest.iter().zip(&body[from..]).position(|(a, b)| a != b);
            return Some(from + wrong.unwrap_or(0));
        }
        None
    }
}

/// Checks a connection's incoming byte stream against its pattern.
#[derive(Debug)]
pub struct Verifier {
    pattern: Pattern,
    message: u64,
    offset: usize,
    newlines: Newlines,
    /// `AfterEach`: the current message is whole, and its newline owed.
    owed_newline: bool,
}

impl Verifier {
    /// A verifier for the echo of `pattern`, with `newlines` appended by
    /// the server (payload then never holds a `\n`).
    pub fn new(pattern: Pattern, newlines: Newlines) -> Verifier {
        Verifier {
            pattern,
            message: 0,
            offset: 0,
            newlines,
            owed_newline: false,
        }
    }

    /// Messages completely received so far.
    pub fn completed(&self) -> u64 {
        self.message
    }

    /// True when a message has come back whole and its newline is owed.
    pub fn owes_newline(&self) -> bool {
        self.owed_newline
    }

    /// True when the stream ends at a message boundary, its newline in.
    pub fn at_boundary(&self) -> bool {
        self.offset == 0 && !self.owed_newline
    }

    /// Checks `data`, the next bytes of the stream; returns how many
    /// messages it completed.
    pub fn check(&mut self, mut data: &[u8]) -> Result<u64, Mismatch> {
        let before = self.message;
        let size = self.pattern.size;
        while !data.is_empty() {
            if self.owed_newline {
                if data[0] != b'\n' {
                    return Err(Mismatch {
                        message: self.message,
                        offset: size,
                    });
                }
                self.owed_newline = false;
                self.message += 1;
                data = &data[1..];
                continue;
            }
            // Payload never holds '\n' when the server adds newlines: they
            // fall between the chunks it read.
            if self.newlines != Newlines::None && data[0] == b'\n' {
                data = &data[1..];
                continue;
            }
            let limit = data.len().min(size - self.offset);
            // Searched up to the message's end only: a read holding many
            // pipelined messages is scanned once, not once per message.
            let take = match self.newlines {
                Newlines::None => limit,
                _ => data[..limit]
                    .iter()
                    .position(|&b| b == b'\n')
                    .unwrap_or(limit),
            };
            self.consume(&data[..take])?;
            data = &data[take..];
        }
        Ok(self.message - before)
    }

    fn consume(&mut self, part: &[u8]) -> Result<(), Mismatch> {
        if let Some(offset) = self.pattern.matches(self.message, self.offset, part) {
            return Err(Mismatch {
                message: self.message,
                offset,
            });
        }
        self.offset += part.len();
        if self.offset == self.pattern.size {
            self.offset = 0;
            if self.newlines == Newlines::AfterEach {
                self.owed_newline = true;
            } else {
                self.message += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(pattern: &Pattern, messages: u64) -> Vec<u8> {
        let mut out = vec![0; pattern.message_size() * messages as usize];
        for (i, chunk) in out.chunks_mut(pattern.message_size()).enumerate() {
            pattern.write(i as u64, chunk);
        }
        out
    }

    /// What a verifier that expects a plain echo makes of `bytes` read in
    /// one go.
    fn check_whole(pattern: Pattern, bytes: &[u8]) -> Result<u64, Mismatch> {
        Verifier::new(pattern, Newlines::None).check(bytes)
    }

    #[test]
    fn an_exact_echo_passes_in_any_chunking() {
        let block = Block::new(100, 7, false);
        let bytes = stream(&block.pattern(3, 100), 50);
        for chunk in [1, 7, 100, 333, 5000] {
            let mut verifier = Verifier::new(block.pattern(3, 100), Newlines::None);
            let done: u64 = bytes
                .chunks(chunk)
                .map(|c| verifier.check(c).unwrap())
                .sum();
            assert_eq!(done, 50);
            assert!(verifier.at_boundary());
        }
    }

    #[test]
    fn a_flipped_byte_is_caught_where_it_is() {
        let block = Block::new(64, 7, false);
        let mut bytes = stream(&block.pattern(0, 64), 10);
        bytes[3 * 64 + 40] ^= 1;
        let err = check_whole(block.pattern(0, 64), &bytes).unwrap_err();
        assert_eq!(
            err,
            Mismatch {
                message: 3,
                offset: 40
            }
        );
    }

    #[test]
    fn a_lost_or_repeated_message_is_caught() {
        let block = Block::new(16, 7, false);
        let bytes = stream(&block.pattern(0, 16), 4);
        let lost = [&bytes[..16], &bytes[32..]].concat();
        assert!(check_whole(block.pattern(0, 16), &lost).is_err());
        let repeated = [&bytes[..32], &bytes[16..]].concat();
        assert!(check_whole(block.pattern(0, 16), &repeated).is_err());
    }

    #[test]
    fn another_connections_bytes_are_caught() {
        let block = Block::new(64, 7, false);
        let theirs = stream(&block.pattern(1, 64), 1);
        assert!(check_whole(block.pattern(2, 64), &theirs).is_err());
    }

    #[test]
    fn appended_newlines_are_skipped_when_expected() {
        let block = Block::new(10, 7, true);
        let pattern = block.pattern(0, 10);
        let bytes = stream(&pattern, 3);
        assert!(!bytes.contains(&b'\n'));
        let mut with_newlines = Vec::new();
        for chunk in bytes.chunks(7) {
            with_newlines.extend_from_slice(chunk);
            with_newlines.push(b'\n');
        }
        let mut verifier = Verifier::new(pattern, Newlines::Between);
        assert_eq!(verifier.check(&with_newlines).unwrap(), 3);
    }

    #[test]
    fn with_one_message_in_flight_each_needs_its_newline() {
        let block = Block::new(10, 7, true);
        let pattern = block.pattern(0, 10);
        let bytes = stream(&pattern, 2);
        // Read in two chunks, each with its newline: complete only once the
        // newline after its last byte is in.
        let mut verifier = Verifier::new(pattern.clone(), Newlines::AfterEach);
        assert_eq!(verifier.check(&bytes[..4]).unwrap(), 0);
        assert_eq!(verifier.check(b"\n").unwrap(), 0);
        assert_eq!(verifier.check(&bytes[4..10]).unwrap(), 0);
        assert!(!verifier.at_boundary());
        assert_eq!(verifier.check(b"\n").unwrap(), 1);
        assert!(verifier.at_boundary());
        // A plain echo: the next message's bytes where the newline is owed.
        let mut verifier = Verifier::new(pattern, Newlines::AfterEach);
        assert_eq!(
            verifier.check(&bytes),
            Err(Mismatch {
                message: 0,
                offset: 10
            })
        );
    }

    #[test]
    fn messages_shorter_than_the_stamp_still_carry_part_of_it() {
        let block = Block::new(3, 7, false);
        let bytes = stream(&block.pattern(0, 3), 100);
        assert_eq!(check_whole(block.pattern(0, 3), &bytes).unwrap(), 100);
    }
}
