//! Dead letters: records that could not be read, with where they came from and why.

use serde::{Deserialize, Serialize};

/// A record that a source or operator could not process. Dead letters are counted
/// (`tributary_dead_letters_total`), logged, and flow on a stream of their own that a job can
/// send to any sink.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The source or operator that rejected the record.
    pub origin: String,
    /// Where the record was: `file.jsonl:17`, `topic/3@1042`.
    pub location: String,
    /// Why it was rejected.
    pub reason: String,
    /// The raw record, lossily decoded as UTF-8 and cut to at most
    /// [`DeadLetter::MAX_PAYLOAD`] bytes.
    pub payload: String,
}

impl DeadLetter {
    /// The most payload bytes a dead letter keeps.
    pub const MAX_PAYLOAD: usize = 4096;

    /// A dead letter; `payload` is truncated to [`DeadLetter::MAX_PAYLOAD`] bytes.
    pub fn new(
        origin: impl Into<String>,
        location: impl Into<String>,
        reason: impl Into<String>,
        payload: &[u8],
    ) -> Self {
        let cut = &payload[..payload.len().min(Self::MAX_PAYLOAD)];
        DeadLetter {
            origin: origin.into(),
            location: location.into(),
            reason: reason.into(),
            payload: String::from_utf8_lossy(cut).into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_truncated_and_lossy() {
        let big = vec![b'x'; 10_000];
        assert_eq!(DeadLetter::new("s", "f:1", "r", &big).payload.len(), DeadLetter::MAX_PAYLOAD);
        assert_eq!(DeadLetter::new("s", "f:1", "r", b"a\xffb").payload, "a\u{fffd}b");
    }
}
