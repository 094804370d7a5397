//! JSON decoding, shared by the Kafka and file sources.

use serde::de::DeserializeOwned;

/// Decodes one JSON document (a line of a file, a Kafka value) into `D`; the error says what
/// is wrong, for a dead letter.
///
/// The bytes are checked as UTF-8 once, as a whole (`std::str::from_utf8`, vectorised), and
/// then parsed as a `str`. serde_json's `from_slice` accepts the same documents but checks
/// each string on its own, which costs about a fifth of the decode time of an IoT reading
/// (docs/benchmarks.md, "JSON decoding").
///
/// # Examples
/// ```
/// use tributary_connectors::format::json::decode;
///
/// let pair: (u32, String) = decode(br#"[7, "seven"]"#).unwrap();
/// assert_eq!(pair, (7, "seven".to_owned()));
/// assert!(decode::<(u32, String)>(b"[7, \"\xff\"]").unwrap_err().contains("UTF-8"));
/// ```
#[inline]
pub fn decode<D: DeserializeOwned>(bytes: &[u8]) -> Result<D, String> {
    let text = std::str::from_utf8(bytes).map_err(|e| format!("not UTF-8: {e}"))?;
    serde_json::from_str(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_place_like_serde_json() {
        let error = decode::<(u32, u32)>(b"[1, x]").unwrap_err();
        assert_eq!(error, serde_json::from_slice::<(u32, u32)>(b"[1, x]").unwrap_err().to_string());
        let error = decode::<u32>(b"1\xc3").unwrap_err();
        assert_eq!(error, "not UTF-8: incomplete utf-8 byte sequence from index 1");
    }
}
