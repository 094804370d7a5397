//! A client of a Confluent-compatible schema registry (Confluent Schema Registry, Apicurio
//! Registry under `/apis/ccompat/v7`, Karapace, Redpanda): schemas by id, the latest schema
//! of a subject, and looking up or registering a schema under a subject.
//!
//! Schemas by id are immutable in a registry, so each is fetched once and kept. Start-up
//! checks that the registry answers ([`Registry::connect`]); later requests retry
//! unreachable registries and server errors with exponential backoff for `retry_for`, then
//! fail with [`RegistryError::Unavailable`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, HumanDuration};
use ureq::http::Response;
use ureq::Body;

use super::DecodeError;

/// The media type of the registry's requests and answers.
const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// The first wait before a retry; doubled each time up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Error codes of "not found" answers: subject, version, schema.
const NOT_FOUND_CODES: [i64; 3] = [40401, 40402, 40403];

/// How to reach a schema registry (the `schema.registry` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The base URL of the Confluent-compatible API, e.g. `http://registry:8081` or, for
    /// Apicurio, `http://registry:8080/apis/ccompat/v7`.
    pub url: String,
    /// HTTP basic authentication: user name.
    #[serde(default)]
    pub username: Option<String>,
    /// HTTP basic authentication: password.
    #[serde(default)]
    pub password: Option<String>,
    /// PEM file of the certificate authorities to trust for `https` (Mozilla's roots
    /// otherwise).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM file of a client certificate chain, for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// How long one request may take.
    #[serde(default = "default_timeout")]
    pub timeout: HumanDuration,
    /// How long a request is retried while the registry is unreachable or failing (5xx)
    /// before the job stops.
    #[serde(default = "default_retry_for")]
    pub retry_for: HumanDuration,
}

fn default_timeout() -> HumanDuration {
    HumanDuration(Duration::from_secs(10))
}

fn default_retry_for() -> HumanDuration {
    HumanDuration(Duration::from_secs(60))
}

impl RegistryConfig {
    /// A registry at `url` with the defaults.
    pub fn new(url: impl Into<String>) -> Self {
        RegistryConfig {
            url: url.into(),
            username: None,
            password: None,
            ca_file: None,
            cert_file: None,
            key_file: None,
            timeout: default_timeout(),
            retry_for: default_retry_for(),
        }
    }
}

/// Which part of a Kafka record a schema is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The record key.
    Key,
    /// The record value.
    Value,
}

impl Part {
    /// `key` or `value`, as subjects name them.
    pub fn name(self) -> &'static str {
        match self {
            Part::Key => "key",
            Part::Value => "value",
        }
    }
}

/// How a sink names the subject of its schema (Confluent's subject name strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectStrategy {
    /// `<topic>-value` (`<topic>-key` for keys): one schema (and its versions) per topic.
    #[default]
    TopicName,
    /// The record's full name, e.g. `tributary.Candle`: one schema per type, on any topic.
    RecordName,
    /// `<topic>-<record full name>`: several types per topic.
    TopicRecordName,
}

impl SubjectStrategy {
    /// The subject of the `part` of records of `topic` whose schema's full name is `record`.
    pub fn subject(self, topic: &str, record: &str, part: Part) -> String {
        match self {
            SubjectStrategy::TopicName => format!("{topic}-{}", part.name()),
            SubjectStrategy::RecordName => record.to_owned(),
            SubjectStrategy::TopicRecordName => format!("{topic}-{record}"),
        }
    }
}

/// A schema as the registry holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// Its id, the one records carry.
    pub id: u32,
    /// `AVRO`, `PROTOBUF` or `JSON`.
    pub schema_type: String,
    /// The schema text.
    pub schema: String,
}

/// What went wrong talking to the registry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The registry does not have it (a subject, version or schema id).
    #[error("{what}: not in the registry at {url} ({message})")]
    NotFound {
        /// What was asked for.
        what: String,
        /// The registry's base URL.
        url: String,
        /// The registry's message.
        message: String,
    },
    /// The registry refused the request (4xx), e.g. an incompatible schema or bad
    /// credentials.
    #[error("{what}: the registry at {url} answered {status}: {message}")]
    Refused {
        /// What was asked for.
        what: String,
        /// The registry's base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The registry's message.
        message: String,
    },
    /// The registry could not be reached or kept failing (5xx) for the whole retry period.
    #[error("{what}: the registry at {url} is unavailable: {reason}")]
    Unavailable {
        /// What was asked for.
        what: String,
        /// The registry's base URL.
        url: String,
        /// The last failure.
        reason: String,
    },
}

impl RegistryError {
    /// Whether asking again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, RegistryError::Unavailable { .. })
    }
}

/// A schema registry client, shared by the readers and writers of a connector.
pub struct Registry {
    agent: ureq::Agent,
    url: String,
    authorization: Option<String>,
    retry_for: Duration,
    by_id: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("url", &self.url).finish_non_exhaustive()
    }
}

/// The body of a registry answer with a schema.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SchemaAnswer {
    id: Option<u32>,
    schema: Option<String>,
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

/// The body of a registry error.
#[derive(Deserialize)]
struct ErrorAnswer {
    error_code: Option<i64>,
    message: Option<String>,
}

impl Registry {
    /// A client of the registry `config` names, after checking that it answers (keys in
    /// errors are relative to the `schema.registry` table).
    pub fn connect(config: &RegistryConfig) -> Result<Registry, ConfigError> {
        let key = |k: &str| format!("schema.registry.{k}");
        let url = config.url.trim_end_matches('/').to_owned();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::new(key("url"), format!("`{url}` is not an http(s) URL")));
        }
        let authorization = match (&config.username, &config.password) {
            (Some(user), Some(password)) => {
                use base64::Engine as _;
                let token =
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
                Some(format!("Basic {token}"))
            }
            (None, None) => None,
            _ => {
                return Err(ConfigError::new(
                    key("username"),
                    "basic authentication needs both `username` and `password`",
                ))
            }
        };
        let pem = |field: &str, path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| ConfigError::new(key(field), format!("`{}`: {e}", path.display())))
        };
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &config.ca_file {
            let certs = certificates(&pem("ca_file", path)?)
                .map_err(|e| ConfigError::new(key("ca_file"), e.to_string()))?;
            if certs.is_empty() {
                return Err(ConfigError::new(key("ca_file"), "holds no PEM certificate"));
            }
            tls = tls.root_certs(ureq::tls::RootCerts::Specific(Arc::new(certs)));
        }
        match (&config.cert_file, &config.key_file) {
            (Some(cert), Some(private)) => {
                let chain = certificates(&pem("cert_file", cert)?)
                    .map_err(|e| ConfigError::new(key("cert_file"), e.to_string()))?;
                let private = ureq::tls::PrivateKey::from_pem(&pem("key_file", private)?)
                    .map_err(|e| ConfigError::new(key("key_file"), e.to_string()))?;
                tls = tls.client_cert(Some(ureq::tls::ClientCert::new_with_certs(&chain, private)));
            }
            (None, None) => {}
            _ => {
                return Err(ConfigError::new(
                    key("cert_file"),
                    "mutual TLS needs both `cert_file` and `key_file`",
                ))
            }
        }
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(config.timeout.0))
            .tls_config(tls.build())
            .build()
            .new_agent();
        let registry = Registry {
            agent,
            url,
            authorization,
            retry_for: config.retry_for.0,
            by_id: Mutex::new(HashMap::new()),
        };
        // One attempt, no retries: a registry down at start-up is a configuration problem.
        registry
            .call("the list of subjects", Duration::ZERO, "/subjects", None)
            .map_err(|e| ConfigError::new(key("url"), e.to_string()))?;
        Ok(registry)
    }

    /// The base URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema with this id (fetched once, then kept).
    pub fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        if let Some(schema) = self.by_id.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
            return Ok(Arc::clone(schema));
        }
        let what = format!("schema id {id}");
        let answer = self.call(&what, self.retry_for, &format!("/schemas/ids/{id}"), None)?;
        let schema = Arc::new(self.registered(&what, answer, Some(id))?);
        tracing::info!(registry = %self.url, id, schema_type = %schema.schema_type,
            "writer schema fetched from the registry");
        let mut by_id = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        Ok(Arc::clone(by_id.entry(id).or_insert(schema)))
    }

    /// The writer schema `id` of a record, which must be a `schema_type` schema: `Ok(Err)`
    /// says why records of this id are dead letters (unknown id, another type, an answer
    /// that is not a usable schema), `Err` that the registry could not be asked (the job
    /// stops rather than dead-letter good records).
    pub fn writer_schema(
        &self,
        id: u32,
        schema_type: &str,
    ) -> Result<Result<Arc<RegisteredSchema>, String>, DecodeError> {
        let schema = match self.schema(id) {
            Ok(s) if s.schema_type != schema_type => {
                Err(format!("schema id {id} is a {} schema, not {schema_type}", s.schema_type))
            }
            Ok(s) => Ok(s),
            // A registry assigns an id before any record carries it: a record with an id the
            // registry does not know was not written through this registry.
            Err(e @ RegistryError::NotFound { .. }) => Err(format!("unknown writer schema: {e}")),
            // An answer that is not a schema we can use (`status` 200), e.g. with references.
            Err(e @ RegistryError::Refused { status: 200, .. }) => {
                Err(format!("writer schema: {e}"))
            }
            // Refused (credentials, say) or unreachable: no record can be judged.
            Err(e) => return Err(DecodeError::Unavailable(e.to_string())),
        };
        if let Err(reason) = &schema {
            tracing::warn!(registry = %self.url, id, reason, "records of a writer schema will \
                be dead letters");
        }
        Ok(schema)
    }

    /// The latest schema registered under `subject`.
    pub fn latest(&self, subject: &str) -> Result<RegisteredSchema, RegistryError> {
        let what = format!("the latest schema of subject `{subject}`");
        let path = format!("/subjects/{}/versions/latest", encode_path(subject));
        let answer = self.call(&what, self.retry_for, &path, None)?;
        self.registered(&what, answer, None)
    }

    /// The id of `schema` (of `schema_type`, e.g. `AVRO`) under `subject`; `None` if it is
    /// not registered there (or the subject does not exist).
    pub fn lookup(
        &self,
        subject: &str,
        schema: &str,
        schema_type: &str,
    ) -> Result<Option<u32>, RegistryError> {
        let what = format!("the schema under subject `{subject}`");
        let path = format!("/subjects/{}", encode_path(subject));
        let body = schema_body(schema, schema_type);
        match self.call(&what, self.retry_for, &path, Some(&body)) {
            Ok(answer) => Ok(Some(self.registered(&what, answer, None)?.id)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Registers `schema` under `subject` (a new version, or the existing one if the same
    /// schema is there) and returns its id.
    pub fn register(
        &self,
        subject: &str,
        schema: &str,
        schema_type: &str,
    ) -> Result<u32, RegistryError> {
        let what = format!("registering a schema under subject `{subject}`");
        let path = format!("/subjects/{}/versions", encode_path(subject));
        let body = schema_body(schema, schema_type);
        let answer = self.call(&what, self.retry_for, &path, Some(&body))?;
        let answer: SchemaAnswer = parse(&what, &self.url, &answer)?;
        answer.id.ok_or_else(|| self.malformed(&what, "no `id` in the answer"))
    }

    fn registered(
        &self,
        what: &str,
        answer: String,
        id: Option<u32>,
    ) -> Result<RegisteredSchema, RegistryError> {
        let answer: SchemaAnswer = parse(what, &self.url, &answer)?;
        if !answer.references.is_empty() {
            // todo(#25): schema references (imported Avro types, Protobuf imports).
            return Err(self.malformed(what, "the schema has references, not supported yet"));
        }
        Ok(RegisteredSchema {
            id: id.or(answer.id).ok_or_else(|| self.malformed(what, "no `id` in the answer"))?,
            schema_type: answer.schema_type.unwrap_or_else(|| "AVRO".to_owned()),
            schema: answer
                .schema
                .ok_or_else(|| self.malformed(what, "no `schema` in the answer"))?,
        })
    }

    /// One request, without retries.
    fn send(&self, path: &str, body: Option<&str>) -> Result<Response<Body>, ureq::Error> {
        let url = format!("{}{path}", self.url);
        let auth = self.authorization.as_deref();
        match body {
            None => authorize(self.agent.get(&url), auth).call(),
            Some(body) => authorize(self.agent.post(&url), auth)
                .header("Content-Type", CONTENT_TYPE)
                .send(body),
        }
    }

    fn malformed(&self, what: &str, reason: &str) -> RegistryError {
        RegistryError::Refused {
            what: what.to_owned(),
            url: self.url.clone(),
            status: 200,
            message: reason.to_owned(),
        }
    }

    /// Sends `GET path`, or `POST path` with `body`, retrying transport failures and server
    /// errors for `retry_for`; returns the body of a 2xx answer.
    fn call(
        &self,
        what: &str,
        retry_for: Duration,
        path: &str,
        body: Option<&str>,
    ) -> Result<String, RegistryError> {
        let started = Instant::now();
        let mut backoff = FIRST_BACKOFF;
        loop {
            let failure = match self.send(path, body) {
                Ok(mut response) => {
                    let status = response.status().as_u16();
                    let body = response.body_mut().read_to_string().unwrap_or_default();
                    if (200..300).contains(&status) {
                        return Ok(body);
                    }
                    let error: Option<ErrorAnswer> = serde_json::from_str(&body).ok();
                    let code = error.as_ref().and_then(|e| e.error_code);
                    let message = error.and_then(|e| e.message).unwrap_or(body);
                    if status == 404 || code.is_some_and(|c| NOT_FOUND_CODES.contains(&c)) {
                        return Err(RegistryError::NotFound {
                            what: what.to_owned(),
                            url: self.url.clone(),
                            message,
                        });
                    }
                    if status < 500 {
                        return Err(RegistryError::Refused {
                            what: what.to_owned(),
                            url: self.url.clone(),
                            status,
                            message,
                        });
                    }
                    format!("HTTP {status}: {message}")
                }
                Err(e) => e.to_string(),
            };
            if started.elapsed() + backoff > retry_for {
                return Err(RegistryError::Unavailable {
                    what: what.to_owned(),
                    url: self.url.clone(),
                    reason: failure,
                });
            }
            tracing::warn!(registry = %self.url, what, reason = %failure,
                retry_in_ms = backoff.as_millis() as u64, "schema registry request failed");
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }
}

/// The certificates of a PEM file (other items skipped).
fn certificates(pem: &[u8]) -> Result<Vec<ureq::tls::Certificate<'static>>, ureq::Error> {
    ureq::tls::parse_pem(pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(c)) => Some(Ok(c)),
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        })
        .collect()
}

/// Adds the headers every request carries.
fn authorize<B>(request: ureq::RequestBuilder<B>, auth: Option<&str>) -> ureq::RequestBuilder<B> {
    let request = request.header("Accept", CONTENT_TYPE);
    match auth {
        Some(auth) => request.header("Authorization", auth),
        None => request,
    }
}

fn schema_body(schema: &str, schema_type: &str) -> String {
    serde_json::json!({ "schema": schema, "schemaType": schema_type }).to_string()
}

fn parse<'a, T: Deserialize<'a>>(what: &str, url: &str, body: &'a str) -> Result<T, RegistryError> {
    serde_json::from_str(body).map_err(|e| RegistryError::Refused {
        what: what.to_owned(),
        url: url.to_owned(),
        status: 200,
        message: format!("unexpected answer ({e}): {body}"),
    })
}

/// Percent-encodes a subject for a URL path (subjects may hold `/`, `:` or spaces).
fn encode_path(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    for b in subject.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_follow_the_strategies_and_are_encoded_for_paths() {
        let value = Part::Value;
        assert_eq!(SubjectStrategy::TopicName.subject("trades", "m.Trade", value), "trades-value");
        assert_eq!(SubjectStrategy::TopicName.subject("trades", "m", Part::Key), "trades-key");
        assert_eq!(SubjectStrategy::RecordName.subject("trades", "m.Trade", value), "m.Trade");
        assert_eq!(SubjectStrategy::TopicRecordName.subject("t", "m.Trade", value), "t-m.Trade");
        assert_eq!(encode_path("a b/c:d-e.f"), "a%20b%2Fc%3Ad-e.f");
    }

    #[test]
    fn an_unreachable_registry_is_a_config_error_naming_the_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let url = format!("http://{port}");
        let error = Registry::connect(&RegistryConfig::new(&url)).unwrap_err().to_string();
        assert!(error.contains("schema.registry.url") && error.contains(&url), "{error}");
        let error = Registry::connect(&RegistryConfig::new("registry:8081")).unwrap_err();
        assert!(error.to_string().contains("not an http(s) URL"), "{error}");
    }
}
