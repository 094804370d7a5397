//! Finishing a transaction that a crashed producer left prepared: `EndTxn` with the producer
//! id and epoch it had, sent straight to the transaction coordinator.
//!
//! librdkafka can only finish its own transactions, and a new producer with the same
//! `transactional.id` aborts what the old one left open. A checkpoint, though, may be complete
//! while its transaction is not yet committed (the process died in between); the restarted
//! job must commit that transaction, not abort it. So the sink remembers, per prepared
//! transaction, the producer id and epoch the coordinator gave it, and on restore sends the
//! commit itself (what Flink's Kafka sink does through the Java client's internals). Kafka
//! answers a repeated commit of a committed transaction with success, so this is safe to do
//! for every transaction a restored checkpoint lists.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, EndTxnRequest, FindCoordinatorRequest, ProducerId, RequestHeader,
    ResponseHeader, TransactionalId,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};

use crate::error::ConnectorError;

/// A transaction prepared for a checkpoint: everything a restarted job needs to commit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prepared {
    /// Its `transactional.id`.
    pub id: String,
    /// The producer id the coordinator assigned.
    pub producer_id: i64,
    /// The producer epoch the coordinator assigned.
    pub epoch: i16,
}

/// How long one attempt to reach a broker may take.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to retry while the coordinator is busy or moving.
const RETRY_FOR: Duration = Duration::from_secs(60);

/// Commits `txn` on the cluster at `brokers` (`host:port[,...]`). Succeeds if the transaction
/// is committed, now or before; fails if the coordinator aborted it (its
/// `transaction.timeout.ms` ran out) or another producer took its id over.
pub fn commit_prepared(brokers: &str, txn: &Prepared) -> Result<(), ConnectorError> {
    let deadline = Instant::now() + RETRY_FOR;
    loop {
        match try_commit(brokers, txn) {
            Ok(()) => return Ok(()),
            Err(Attempt::Retry(reason)) if Instant::now() < deadline => {
                tracing::debug!(transaction = %txn.id, reason, "commit of a prepared transaction: retrying");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(attempt) => {
                let (id, producer, epoch) = (&txn.id, txn.producer_id, txn.epoch);
                let context = format!("transaction `{id}` (producer {producer} epoch {epoch})");
                return Err(attempt.into_error(&context));
            }
        }
    }
}

/// A blocking connection to one broker that speaks the Kafka protocol itself, for requests
/// the client library does not offer (finishing another producer's transaction, reading
/// record batches with their producer ids).
pub struct Connection {
    stream: TcpStream,
    address: String,
    correlation: i32,
    /// `(api key, min version, max version)` the broker supports.
    versions: Vec<(i16, i16, i16)>,
}

impl Connection {
    /// Connects to the first reachable broker of `brokers` (`host:port[,...]`) and asks which
    /// API versions it supports.
    pub fn connect(brokers: &str) -> Result<Connection, ConnectorError> {
        Connection::open_any(brokers).map_err(|a| a.into_error("connecting"))
    }

    /// Sends `request` at the highest version in `versions` the broker supports and waits
    /// for its response.
    pub fn request<R: Request>(
        &mut self,
        request: R,
        versions: std::ops::RangeInclusive<i16>,
    ) -> Result<R::Response, ConnectorError> {
        self.call(request, versions).map_err(|a| a.into_error("request"))
    }
}

/// Whether the broker at `brokers` can run transactions (lists `EndTxn` among its APIs).
pub fn supported(brokers: &str) -> Result<bool, ConnectorError> {
    let connection = Connection::open_any(brokers).map_err(|a| a.into_error("connecting"))?;
    Ok(connection.versions.iter().any(|&(key, ..)| key == EndTxnRequest::KEY))
}

enum Attempt {
    Retry(String),
    Fail(String),
}

impl Attempt {
    /// The failure of the last attempt at `context`.
    fn into_error(self, context: &str) -> ConnectorError {
        let (reason, retryable) = match self {
            Attempt::Retry(reason) => (reason, true),
            Attempt::Fail(reason) => (reason, false),
        };
        ConnectorError::Broker { reason: format!("{context}: {reason}"), retryable }
    }
}

fn try_commit(brokers: &str, txn: &Prepared) -> Result<(), Attempt> {
    let mut bootstrap = Connection::open_any(brokers)?;
    let find = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(txn.id.clone()))
        .with_key_type(1);
    let found = bootstrap.call(find, 1..=3)?;
    if let Some(e) = found.error_code.err() {
        return Err(classify(e, "finding the transaction coordinator"));
    }
    let mut coordinator = Connection::open(&format!("{}:{}", found.host.as_str(), found.port))?;
    let end = EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(txn.id.clone())))
        .with_producer_id(ProducerId(txn.producer_id))
        .with_producer_epoch(txn.epoch)
        .with_committed(true);
    let ended = coordinator.call(end, 0..=3)?;
    match ended.error_code.err() {
        None => Ok(()),
        // The coordinator aborts a transaction open longer than its timeout and bumps the
        // producer's epoch, which fences the epoch saved here (ProducerFenced); a newer
        // producer with the same id does the same.
        Some(
            e @ (ResponseError::ProducerFenced
            | ResponseError::InvalidProducerEpoch
            | ResponseError::InvalidTxnState),
        ) => Err(Attempt::Fail(format!(
            "the coordinator aborted it ({e:?}): did the job stay down longer than the \
             producer's `transaction.timeout.ms`, or did another producer take its id over? \
             The output of the checkpoint is lost"
        ))),
        Some(e @ ResponseError::InvalidProducerIdMapping) => Err(Attempt::Fail(format!(
            "the coordinator does not know it ({e:?}): did the job stay down longer than the \
             broker's `transactional.id.expiration.ms`? The output of the checkpoint is lost"
        ))),
        Some(e) => Err(classify(e, "committing")),
    }
}

/// Errors worth another attempt (the coordinator moving or loading) and the others.
fn classify(error: ResponseError, doing: &str) -> Attempt {
    let reason = format!("{doing}: {error:?}");
    match error {
        ResponseError::CoordinatorNotAvailable
        | ResponseError::CoordinatorLoadInProgress
        | ResponseError::NotCoordinator
        | ResponseError::ConcurrentTransactions
        | ResponseError::RequestTimedOut => Attempt::Retry(reason),
        _ => Attempt::Fail(reason),
    }
}

/// One blocking connection to a broker, speaking the versions both sides support.
impl Connection {
    fn open_any(brokers: &str) -> Result<Self, Attempt> {
        let mut last = Attempt::Fail(format!("no broker in `{brokers}`"));
        for address in brokers.split(',').map(str::trim).filter(|a| !a.is_empty()) {
            match Connection::open(address) {
                Ok(c) => return Ok(c),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn open(address: &str) -> Result<Self, Attempt> {
        let retry = |e: std::io::Error| Attempt::Retry(format!("`{address}`: {e}"));
        let socket = address
            .to_socket_addrs()
            .map_err(retry)?
            .next()
            .ok_or_else(|| Attempt::Fail(format!("`{address}` resolves to no address")))?;
        let stream = TcpStream::connect_timeout(&socket, IO_TIMEOUT).map_err(retry)?;
        stream.set_read_timeout(Some(IO_TIMEOUT)).map_err(retry)?;
        stream.set_write_timeout(Some(IO_TIMEOUT)).map_err(retry)?;
        let mut c = Connection {
            stream,
            address: address.to_owned(),
            correlation: 0,
            versions: Vec::new(),
        };
        let versions = c.send(ApiVersionsRequest::default(), 0)?;
        if let Some(e) = versions.error_code.err() {
            return Err(Attempt::Fail(format!("`{address}` ApiVersions: {e:?}")));
        }
        c.versions =
            versions.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        Ok(c)
    }

    /// Sends `request` at the highest version in `ours` the broker supports.
    fn call<R: Request>(
        &mut self,
        request: R,
        ours: std::ops::RangeInclusive<i16>,
    ) -> Result<R::Response, Attempt> {
        let version = self
            .versions
            .iter()
            .find(|(key, ..)| *key == R::KEY)
            .and_then(|&(_, min, max)| {
                let v = max.min(*ours.end());
                (v >= min.max(*ours.start())).then_some(v)
            })
            .ok_or_else(|| {
                let api = ApiKey::try_from(R::KEY).map_or("?".into(), |k| format!("{k:?}"));
                Attempt::Fail(format!("`{}` does not support {api} {ours:?}", self.address))
            })?;
        self.send(request, version)
    }

    fn send<R: Request>(&mut self, request: R, version: i16) -> Result<R::Response, Attempt> {
        let fail = |e: String| Attempt::Fail(format!("`{}`: {e}", self.address));
        self.correlation += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("tributary")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| fail(e.to_string()))?;
        let io = |e: std::io::Error| Attempt::Retry(format!("`{}`: {e}", self.address));
        let size = u32::try_from(body.len()).map_err(|e| fail(e.to_string()))?;
        self.stream.write_all(&size.to_be_bytes()).map_err(io)?;
        self.stream.write_all(&body).map_err(io)?;
        let mut size = [0; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let mut reply = vec![0; u32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut reply).map_err(io)?;
        let mut reply = bytes::Bytes::from(reply);
        let header = ResponseHeader::decode(&mut reply, R::Response::header_version(version))
            .map_err(|e| fail(e.to_string()))?;
        if header.correlation_id != self.correlation {
            return Err(fail(format!(
                "reply to request {} instead of {}",
                header.correlation_id, self.correlation
            )));
        }
        let response = R::Response::decode(&mut reply, version).map_err(|e| fail(e.to_string()))?;
        if reply.has_remaining() {
            tracing::debug!(address = %self.address, left = reply.remaining(), "unread reply bytes");
        }
        Ok(response)
    }
}
