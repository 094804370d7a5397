//! End-to-end tests of `iot-alerts`: its alerts against a naive recomputation from the
//! generator's readings, on the generator and through Apache Kafka with a compacted registry
//! topic that changes and deletes devices.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};
use support::kafka::Kafka;
use support::{run_job, sorted_lines};
use tributary_connectors::generator::{DeviceInfo, Generate, IotModel};
use tributary_connectors::{IotConfig, IotReadings, Pace, SensorReading};
use tributary_runtime::time::format_event_time;
use tributary_runtime::HumanDuration;

/// Detector settings, as `--set` flags and as numbers for the oracle.
struct Detector {
    baseline_ms: u64,
    step_ms: u64,
    sigmas: f64,
    min_baseline: usize,
    offline_ms: u64,
}

impl Detector {
    fn flags(&self) -> Vec<String> {
        vec![
            format!("job.baseline=\"{}ms\"", self.baseline_ms),
            format!("job.baseline_step=\"{}ms\"", self.step_ms),
            format!("job.sigmas={}", self.sigmas),
            format!("job.min_baseline={}", self.min_baseline),
            format!("job.offline_after=\"{}ms\"", self.offline_ms),
        ]
    }
}

/// The readings generator of a test: `devices` devices, `events` readings at 50 per second,
/// 2 s out of order, 30 % of the devices quiet for 3 minutes every 8.
fn readings_config(devices: u32, events: u64) -> IotConfig {
    IotConfig {
        devices,
        anomaly_rate: 0.005,
        quiet_devices: 0.3,
        quiet_for: HumanDuration(Duration::from_secs(180)),
        quiet_every: HumanDuration(Duration::from_secs(480)),
        pace: Pace {
            events: Some(events),
            events_per_second: 50.0,
            max_disorder: HumanDuration(Duration::from_secs(2)),
            ..Pace::default()
        },
        ..IotConfig::default()
    }
}

fn readings_flags(devices: u32, events: u64) -> Vec<String> {
    vec![
        format!("job.readings.devices={devices}"),
        "job.readings.anomaly_rate=0.005".into(),
        "job.readings.quiet_devices=0.3".into(),
        "job.readings.quiet_for=\"3m\"".into(),
        "job.readings.quiet_every=\"8m\"".into(),
        format!("job.readings.pace.events={events}"),
        "job.readings.pace.events_per_second=50.0".into(),
        "job.readings.pace.max_disorder=\"2s\"".into(),
    ]
}

fn generated(config: &IotConfig) -> (IotModel, Vec<SensorReading>) {
    let model = IotReadings::new(config).expect("valid settings").model().clone();
    let events = config.pace.events.expect("bounded");
    let readings = (0..events).map(|i| model.event(&mut (), i).1).collect();
    (model, readings)
}

/// A Kafka record to produce: key, value (none: a tombstone), timestamp.
type TimedRecord = (Option<Vec<u8>>, Option<Vec<u8>>, Option<i64>);

/// Each device's registry versions: `(since, entry or deleted)`, oldest first.
type Registry = BTreeMap<u32, Vec<(u64, Option<DeviceInfo>)>>;

fn entry_at(registry: &Registry, device: u32, t: u64) -> Option<&DeviceInfo> {
    registry.get(&device)?.iter().rev().find(|(since, _)| *since <= t)?.1.as_ref()
}

fn alert(kind: &str, device: u32, info: Option<&DeviceInfo>, ts: u64) -> Value {
    let mut a = json!({ "kind": kind, "device": device, "ts": format_event_time(ts) });
    if let Some(i) = info {
        a["site"] = json!(i.site);
        a["model"] = json!(i.model);
    }
    a
}

/// The alerts recomputed naively: every reading against the readings of its device in the
/// baseline window before its step, against its registry entry at its time, and every run
/// of a device's readings without a gap of `offline_ms`.
fn naive_alerts(readings: &[SensorReading], registry: &Registry, d: &Detector) -> Vec<Value> {
    let mut by_device: BTreeMap<u32, Vec<&SensorReading>> = BTreeMap::new();
    for r in readings {
        by_device.entry(r.device).or_default().push(r);
    }
    let mut alerts = Vec::new();
    for (&device, rs) in &mut by_device {
        rs.sort_by_key(|r| r.ts);
        for r in rs.iter() {
            let info = entry_at(registry, device, r.ts);
            if let Some(i) = info.filter(|i| r.value < i.low || r.value > i.high) {
                let mut a = alert("out_of_range", device, info, r.ts);
                (a["value"], a["low"], a["high"]) = (json!(r.value), json!(i.low), json!(i.high));
                alerts.push(a);
            }
            let end = r.ts - r.ts % d.step_ms;
            let start = end.saturating_sub(d.baseline_ms);
            let base: Vec<f64> =
                rs.iter().filter(|b| start <= b.ts && b.ts < end).map(|b| b.value).collect();
            if base.len() < d.min_baseline {
                continue;
            }
            let n = base.len() as f64;
            let mean = base.iter().sum::<f64>() / n;
            let std = (base.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let sigmas = (r.value - mean) / std;
            if std > 0.0 && sigmas.abs() > d.sigmas {
                let mut a = alert("anomaly", device, info, r.ts);
                a["value"] = json!(r.value);
                (a["mean"], a["std"], a["sigmas"]) = (json!(mean), json!(std), json!(sigmas));
                alerts.push(a);
            }
        }
        let mut last = rs[0].ts;
        for r in rs.iter().skip(1).map(Some).chain([None]) {
            if r.is_some_and(|r| r.ts - last < d.offline_ms) {
                last = r.map_or(last, |r| r.ts);
                continue;
            }
            let at = last + d.offline_ms;
            let mut a = alert("offline", device, entry_at(registry, device, at - 1), at);
            a["last_seen"] = json!(format_event_time(last));
            alerts.push(a);
            if let Some(r) = r {
                last = r.ts;
            }
        }
    }
    alerts
}

fn sort_key(a: &Value) -> (String, u64, String, String) {
    let s = |k: &str| a[k].as_str().unwrap_or_default().to_owned();
    (s("kind"), a["device"].as_u64().expect("device"), s("ts"), a["value"].to_string())
}

/// Asserts `got` equals `expected` alert by alert: every field exact, except the baseline's
/// mean and deviation (the job rounds exact sums to 4 decimals, the oracle sums floats) and
/// the distance in sigmas (2 decimals).
fn assert_same_alerts(mut got: Vec<Value>, mut expected: Vec<Value>) {
    got.sort_by_key(sort_key);
    expected.sort_by_key(sort_key);
    let keys = |v: &[Value]| v.iter().map(sort_key).collect::<Vec<_>>();
    assert_eq!(keys(&got), keys(&expected), "the same alerts");
    for (g, e) in got.iter().zip(&expected) {
        let (g, e) = (g.as_object().expect("object"), e.as_object().expect("object"));
        assert_eq!(g.keys().collect::<Vec<_>>(), e.keys().collect::<Vec<_>>(), "{g:?} vs {e:?}");
        for (k, ev) in e {
            let tolerance = match k.as_str() {
                "mean" | "std" => 1.1e-4,
                "sigmas" => 0.011,
                _ => {
                    assert_eq!(&g[k], ev, "{k} of {g:?}");
                    continue;
                }
            };
            let (gv, ev) = (g[k].as_f64().expect("number"), ev.as_f64().expect("number"));
            assert!((gv - ev).abs() <= tolerance, "{k}: {gv} vs {ev} in {g:?}");
        }
    }
}

fn json_lines(stdout: &[u8]) -> Vec<Value> {
    sorted_lines([stdout]).iter().map(|l| serde_json::from_str(l).expect("JSON alert")).collect()
}

#[test]
fn alerts_on_the_generator_match_a_naive_recomputation() {
    let (devices, events) = (20, 60_000);
    let detector = Detector {
        baseline_ms: 600_000,
        step_ms: 60_000,
        sigmas: 4.0,
        min_baseline: 30,
        offline_ms: 60_000,
    };
    let mut args: Vec<String> = vec!["--workers".into(), "2".into()];
    for flag in readings_flags(devices, events).into_iter().chain(detector.flags()) {
        args.extend(["--set".into(), flag]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_job("iot-alerts", &args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let (model, readings) = generated(&readings_config(devices, events));
    let registry: Registry =
        (0..devices).map(|d| (d, vec![(0, Some(model.device_info(d)))])).collect();
    let expected = naive_alerts(&readings, &registry, &detector);
    let kinds = |kind: &str| expected.iter().filter(|a| a["kind"] == kind).count();
    assert!(kinds("anomaly") > 50 && kinds("out_of_range") > 50, "the test sees anomalies");
    // Quiet spells make offline alerts before the end of the input, besides one per device
    // at its end.
    assert!(kinds("offline") > devices as usize + 5, "{} offline alerts", kinds("offline"));
    assert_same_alerts(json_lines(&out.stdout), expected);
}

#[test]
fn alerts_from_kafka_with_a_changing_registry_match_a_naive_recomputation() {
    let (devices, events) = (12, 20_000);
    let detector = Detector {
        baseline_ms: 120_000,
        step_ms: 30_000,
        sigmas: 4.0,
        min_baseline: 20,
        offline_ms: 60_000,
    };
    let config = readings_config(devices, events);
    let (model, readings) = generated(&config);
    let start = readings.iter().map(|r| r.ts).min().expect("readings");

    // The registry: every device from an hour before the first reading; device 3's range
    // narrows 200 s in, so that it goes out of range; device 5 is deleted 100 s in.
    let mut registry: Registry =
        (0..devices).map(|d| (d, vec![(start - 3_600_000, Some(model.device_info(d)))])).collect();
    let narrowed = DeviceInfo { low: 1e9, since: start + 200_000, ..model.device_info(3) };
    registry.get_mut(&3).expect("device 3").push((start + 200_000, Some(narrowed)));
    registry.get_mut(&5).expect("device 5").push((start + 100_000, None));

    let kafka = Kafka::shared();
    kafka.create_topic("readings", 2);
    // The registry is a changelog: compacted, as such topics are in production.
    kafka.create_compacted_topic("devices", 1);
    kafka.create_topic("alerts", 1);
    kafka.produce(
        "readings",
        readings.iter().map(|r| {
            (Some(r.device.to_string().into_bytes()), serde_json::to_vec(r).expect("JSON"))
        }),
    );
    let mut changes: Vec<(u64, u32, Option<&DeviceInfo>)> = registry
        .iter()
        .flat_map(|(&d, vs)| vs.iter().map(move |(since, v)| (*since, d, v.as_ref())))
        .collect();
    changes.sort_by_key(|c| c.0);
    let mut records: Vec<TimedRecord> = changes
        .iter()
        .map(|(since, d, v)| {
            let value = v.map(|v| serde_json::to_vec(v).expect("JSON"));
            (Some(d.to_string().into_bytes()), value, Some(*since as i64))
        })
        .collect();
    // A record whose key is no device id: a dead letter, not a failure.
    let valid = serde_json::to_vec(&model.device_info(0)).expect("JSON");
    records.insert(devices as usize, (Some(b"pump-7".to_vec()), Some(valid), Some(start as i64)));
    kafka.produce_records("devices", records);

    let brokers = &kafka.address;
    let input = format!(
        "job.input={{kind=\"kafka\", brokers=\"{brokers}\", topics=[\"readings\"], bounded=true, \
         max_out_of_orderness=\"2s\"}}"
    );
    let registry_input = format!(
        "job.registry={{kind=\"kafka\", brokers=\"{brokers}\", topics=[\"devices\"], bounded=true}}"
    );
    let output = format!("job.output={{kind=\"kafka\", brokers=\"{brokers}\", topic=\"alerts\"}}");
    let mut args: Vec<String> = vec!["--workers".into(), "2".into()];
    for flag in [input, registry_input, output].into_iter().chain(detector.flags()) {
        args.extend(["--set".into(), flag]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_job("iot-alerts", &args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("devices/0@12") && stderr.contains("pump-7"),
        "the bad registry record is reported with topic/partition@offset: {stderr}"
    );

    let expected = naive_alerts(&readings, &registry, &detector);
    let changed = |d: u32, kind: &str| {
        expected.iter().filter(|a| a["device"] == d && a["kind"] == kind).count()
    };
    assert!(changed(3, "out_of_range") > 100, "device 3 is out of its new range");
    assert!(
        expected.iter().any(|a| a["device"] == 5 && a.get("site").is_none()),
        "device 5's alerts after its deletion carry no registry data"
    );
    let got: Vec<Value> = kafka
        .consume("alerts")
        .into_iter()
        .map(|(key, value)| {
            let a: Value = serde_json::from_slice(&value).expect("JSON alert");
            assert_eq!(key, Some(a["device"].to_string().into_bytes()), "keyed by device");
            a
        })
        .collect();
    assert_same_alerts(got, expected);
}
