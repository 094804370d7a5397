//! The process's HTTP endpoint: Prometheus metrics, health checks and the status page.
//!
//! Started with `--metrics-addr` (a port binds 127.0.0.1; `host:port` binds that address).
//! `GET /metrics` renders every metric in Prometheus' text format (the names are in
//! [`crate::metrics`]); `GET /health` answers `ok` while the process runs (liveness);
//! `GET /ready` answers `ready` once the process has joined its cluster and runs the
//! dataflow, `503 starting` before and after (readiness); `GET /status` is the process's
//! [`Snapshot`](crate::status::Snapshot) as JSON, and `GET /` a page that draws it (the
//! dataflow graph with live rates, sources, sinks, checkpoints), refreshed every second.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::ConfigError;
use crate::status::Status;

/// The status page: one self-contained file, no external resources.
const PAGE: &str = include_str!("status/page.html");

/// Whether the process runs its dataflow (see [`set_ready`]).
static READY: AtomicBool = AtomicBool::new(false);

/// Marks the process ready (connected to its peers, dataflow running) or not, for `/ready`.
pub fn set_ready(ready: bool) {
    READY.store(ready, Ordering::Release);
}

/// A running endpoint; dropping it stops the server thread.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    address: SocketAddr,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl MetricsServer {
    /// Installs the Prometheus recorder as the process's metrics recorder and serves it on
    /// `address`. An address that cannot be bound is a configuration error.
    pub fn start(address: SocketAddr, status: Arc<Status>) -> Result<Self, ConfigError> {
        let server = tiny_http::Server::http(address).map_err(|e| {
            ConfigError::new("runtime.metrics_addr", format!("cannot listen on {address}: {e}"))
        })?;
        let address = server.server_addr().to_ip().unwrap_or(address);
        // End-to-end latency as a histogram (aggregatable over processes), from 1 ms to 10 min.
        let buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 600.0];
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(crate::metrics::LATENCY.to_owned()), &buckets)
            .map_err(|e| ConfigError::new("runtime.metrics_addr", e.to_string()))?
            .build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics shows only its own");
        }
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("tributary-metrics".into())
            .spawn(move || serve(&serving, &handle, &status))
            .map_err(|e| ConfigError::new("runtime.metrics_addr", e.to_string()))?;
        tracing::info!(url = %format!("http://{address}/metrics"), "serving metrics");
        Ok(MetricsServer { server, address, thread: Some(thread) })
    }

    /// The bound address (useful with port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(server: &tiny_http::Server, handle: &PrometheusHandle, status: &Status) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or_default();
        let response = match path {
            "/metrics" => {
                handle.run_upkeep();
                text(handle.render(), "text/plain; version=0.0.4; charset=utf-8", 200)
            }
            "/health" => text("ok\n".into(), "text/plain; charset=utf-8", 200),
            "/status" => {
                let snapshot = status.latest().unwrap_or_else(|| status.snapshot(None));
                match serde_json::to_string(&*snapshot) {
                    Ok(json) => text(json, "application/json", 200),
                    Err(e) => text(format!("{e}\n"), "text/plain; charset=utf-8", 500),
                }
            }
            "/" => text(PAGE.to_owned(), "text/html; charset=utf-8", 200),
            "/ready" if READY.load(Ordering::Acquire) => {
                text("ready\n".into(), "text/plain; charset=utf-8", 200)
            }
            "/ready" => text("starting\n".into(), "text/plain; charset=utf-8", 503),
            _ => text("not found\n".into(), "text/plain; charset=utf-8", 404),
        };
        if let Err(error) = request.respond(response) {
            tracing::debug!(%error, "metrics client went away");
        }
    }
}

fn text(
    body: String,
    content_type: &str,
    status: u16,
) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let header =
        tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid static header");
    tiny_http::Response::from_string(body).with_header(header).with_status_code(status)
}

/// Parses `--metrics-addr`: a port (bound on 127.0.0.1) or `host:port`.
pub fn parse_address(value: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = value.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    value.parse().map_err(|_| format!("`{value}` is neither a port nor an ip:port address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_default_to_loopback() {
        assert_eq!(parse_address("9464").unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(parse_address("0.0.0.0:80").unwrap().to_string(), "0.0.0.0:80");
        assert!(parse_address("localhost").unwrap_err().contains("neither a port"));
    }
}
