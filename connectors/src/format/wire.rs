//! The Confluent wire format of records whose schema is in a schema registry: a zero "magic"
//! byte, the schema id as a big-endian 32-bit integer, then the payload.

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
}
