//! `tracing` spans exported over OpenTelemetry (OTLP/HTTP) to a collector this test runs.

mod support;

use std::sync::mpsc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use support::{job_command, run_job};

/// A collector on 127.0.0.1 that answers every request with 200 and hands over the decoded
/// bodies posted to `/v1/traces`.
fn collector() -> (String, mpsc::Receiver<ExportTraceServiceRequest>) {
    let server = tiny_http::Server::http("127.0.0.1:0").expect("bind the collector");
    let address = server.server_addr().to_ip().expect("an IP address").to_string();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for mut request in server.incoming_requests() {
            let mut body = Vec::new();
            let read = request.as_reader().read_to_end(&mut body);
            if request.url() == "/v1/traces" && read.is_ok() {
                let decoded = ExportTraceServiceRequest::decode(body.as_slice());
                // A body that does not decode is a failure the test must see.
                let _ = tx.send(decoded.expect("an OTLP protobuf body"));
            }
            let _ = request.respond(tiny_http::Response::empty(200));
        }
    });
    (format!("http://{address}"), rx)
}

#[test]
fn spans_reach_an_opentelemetry_collector() {
    let (endpoint, bodies) = collector();
    let dir = tempfile::tempdir().expect("temp dir");
    let out = job_command(
        "iot-stats",
        &[
            "--workers",
            "2",
            "--set",
            &format!("runtime.otlp_endpoint=\"{endpoint}\""),
            "--set",
            &format!("runtime.checkpoint.dir=\"{}\"", dir.path().display()),
            "--set",
            "runtime.checkpoint.interval=\"100ms\"",
            "--set",
            "job.readings.pace.events=200000",
            "--set",
            "job.readings.pace.rate=400000",
        ],
    )
    .env("RUST_LOG", "info")
    .output()
    .expect("run the job");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    // The job flushed its spans before it exited, so everything has arrived (or is in the
    // channel): gather until the collector has been quiet for a moment.
    let mut spans: Vec<Span> = Vec::new();
    let mut services = Vec::new();
    while let Ok(request) = bodies.recv_timeout(Duration::from_secs(2)) {
        for resource_spans in request.resource_spans {
            let attributes = resource_spans.resource.map(|r| r.attributes).unwrap_or_default();
            for kv in attributes.into_iter().filter(|kv| kv.key == "service.name") {
                if let Some(Value::StringValue(name)) = kv.value.and_then(|v| v.value) {
                    services.push(name);
                }
            }
            spans.extend(resource_spans.scope_spans.into_iter().flat_map(|s| s.spans));
        }
    }
    assert!(!spans.is_empty(), "no span arrived; job log:\n{stderr}");
    assert!(services.iter().all(|s| s == "iot-stats"), "{services:?}");
    let named = |name: &'static str| spans.iter().filter(move |s| s.name == name);
    let workers: Vec<&Span> = named("worker").collect();
    assert_eq!(workers.len(), 2, "one span per worker");
    // Checkpoints are coordinated by worker 0: each one a child of that worker's span,
    // lasting from its start to its manifest; every worker writes its part in its own span.
    let checkpoints: Vec<&Span> = named("checkpoint").collect();
    assert!(checkpoints.len() >= 2, "{} checkpoint spans", checkpoints.len());
    for c in &checkpoints {
        let parent = workers.iter().find(|w| w.span_id == c.parent_span_id);
        assert!(parent.is_some_and(|w| w.trace_id == c.trace_id), "{c:?}");
        assert!(c.end_time_unix_nano > c.start_time_unix_nano);
        let complete = c.events.iter().any(|e| e.name == "checkpoint complete");
        assert!(complete, "the `checkpoint complete` event inside the span: {c:?}");
    }
    assert!(named("checkpoint_part").count() >= 2 * checkpoints.len());
    // Operator activations are `debug`: not exported at `info`.
    assert_eq!(named("activation").count(), 0);
}

#[test]
fn a_bad_otlp_endpoint_is_a_config_error() {
    let out = run_job("iot-stats", &["--set", "runtime.otlp_endpoint=\"localhost:4318\""]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("runtime.otlp_endpoint") && stderr.contains("not a URL"), "{stderr}");
}
