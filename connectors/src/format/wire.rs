//! The Confluent wire format of records whose schema is in a schema registry: a zero "magic"
//! byte, the schema id as a big-endian 32-bit integer, then the payload. Protobuf payloads
//! start with the path of their message in the schema's file: a count and that many indexes,
//! zig-zag varints (a single 0 for the first message of the file).

use std::borrow::Cow;

/// The first byte of every framed record.
pub const MAGIC: u8 = 0;
/// The magic byte and the schema id.
pub const HEADER_LEN: usize = 5;

/// Splits a framed record into its schema id and payload; the error says why the bytes are
/// not a framed record.
///
/// # Examples
/// ```
/// use tributary_connectors::format::wire;
///
/// assert_eq!(wire::split(&[0, 0, 0, 1, 2, 42]), Ok((258, &[42][..])));
/// assert!(wire::split(b"{\"a\":1}").unwrap_err().contains("magic byte 0x7b"));
/// ```
pub fn split(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    match bytes {
        [MAGIC, a, b, c, d, payload @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), payload)),
        [MAGIC, ..] => Err(format!(
            "{} bytes: too short for the Confluent wire format (a magic byte and a 4-byte \
             schema id)",
            bytes.len()
        )),
        [first, ..] => Err(format!(
            "magic byte 0x{first:02x}, not 0x00: not in the Confluent wire format of a schema \
             registry"
        )),
        [] => Err("empty value".to_owned()),
    }
}

/// Appends the header of a record of schema `id` to `buf`.
pub fn frame(id: u32, buf: &mut Vec<u8>) {
    buf.push(MAGIC);
    buf.extend_from_slice(&id.to_be_bytes());
}

/// The longest message path accepted (nesting depth of the message in its file).
const MAX_INDEXES: usize = 64;

/// Splits a Protobuf payload into its message indexes and the message. The usual case, the
/// first message of the file (a single zero byte), allocates nothing.
pub fn split_indexes(payload: &[u8]) -> Result<(Cow<'static, [usize]>, &[u8]), String> {
    let mut rest = payload;
    let count = zigzag(&mut rest)?;
    if count == 0 {
        return Ok((Cow::Borrowed(&[0]), rest));
    }
    let count = usize::try_from(count).ok().filter(|&c| c <= MAX_INDEXES).ok_or_else(|| {
        format!("{count} message indexes: not a Protobuf record of the wire format")
    })?;
    let mut indexes = Vec::with_capacity(count);
    for _ in 0..count {
        let index = zigzag(&mut rest)?;
        indexes.push(usize::try_from(index).map_err(|_| format!("message index {index}"))?);
    }
    Ok((Cow::Owned(indexes), rest))
}

/// Appends the message indexes `indexes` (a path from the file's messages) to `buf`.
pub fn write_indexes(indexes: &[usize], buf: &mut Vec<u8>) {
    let mut varint = |n: i64| {
        let mut v = ((n << 1) ^ (n >> 63)) as u64;
        while v >= 0x80 {
            buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        buf.push(v as u8);
    };
    if indexes == [0] {
        varint(0);
        return;
    }
    varint(indexes.len() as i64);
    for &i in indexes {
        varint(i as i64);
    }
}

/// Reads one zig-zag varint.
fn zigzag(rest: &mut &[u8]) -> Result<i64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, tail) = rest.split_first().ok_or("truncated message indexes")?;
        *rest = tail;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err("a message index longer than 10 bytes".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_round_trips_and_garbage_is_named() {
        let mut buf = Vec::new();
        frame(0x0102_0304, &mut buf);
        buf.extend_from_slice(b"rest");
        assert_eq!(buf[..HEADER_LEN], [0, 1, 2, 3, 4]);
        assert_eq!(split(&buf), Ok((0x0102_0304, &b"rest"[..])));
        assert_eq!(split(&[0, 0, 0, 0, 7]), Ok((7, &[][..])));
        assert!(split(&[0, 1, 2]).unwrap_err().contains("3 bytes: too short"));
        assert!(split(&[]).unwrap_err().contains("empty"));
        assert!(split(&[1, 0, 0, 0, 1]).unwrap_err().contains("magic byte 0x01"));
    }

    #[test]
    fn message_indexes_round_trip_as_confluent_writes_them() {
        for indexes in [vec![0], vec![1], vec![2, 0, 300]] {
            let mut buf = Vec::new();
            write_indexes(&indexes, &mut buf);
            buf.push(42);
            assert_eq!(split_indexes(&buf), Ok((indexes.into(), &[42][..])));
        }
        // Confluent's short form of [0], and [1] as count 1 (zig-zag 2), index 1 (2).
        assert_eq!(split_indexes(&[0, 9]), Ok((vec![0].into(), &[9][..])));
        let mut buf = Vec::new();
        write_indexes(&[1], &mut buf);
        assert_eq!(buf, [2, 2]);
        assert!(split_indexes(&[2]).unwrap_err().contains("truncated"));
        assert!(split_indexes(&[0xff; 11]).unwrap_err().contains("longer than 10 bytes"));
        assert!(split_indexes(&[1]).unwrap_err().contains("message indexes"), "count -1");
    }
}
