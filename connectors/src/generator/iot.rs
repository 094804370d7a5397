//! Generated IoT sensor readings.

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, EventTime, HumanDuration, Timestamped};

use super::{mix, unit, Clock, Generate, Generator, Pace};

/// What a sensor measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SensorKind {
    /// Degrees Celsius.
    Temperature,
    /// Percent relative humidity.
    Humidity,
    /// Hectopascals.
    Pressure,
    /// Acceleration in g.
    Vibration,
}

impl SensorKind {
    const ALL: [SensorKind; 4] = [
        SensorKind::Temperature,
        SensorKind::Humidity,
        SensorKind::Pressure,
        SensorKind::Vibration,
    ];

    /// The model-name prefix of devices of this kind.
    fn model_prefix(self) -> &'static str {
        match self {
            SensorKind::Temperature => "TMP",
            SensorKind::Humidity => "HUM",
            SensorKind::Pressure => "PRS",
            SensorKind::Vibration => "VIB",
        }
    }

    /// Typical level and spread of the measurement.
    fn baseline(self) -> (f64, f64) {
        match self {
            SensorKind::Temperature => (21.0, 4.0),
            SensorKind::Humidity => (45.0, 15.0),
            SensorKind::Pressure => (1013.0, 8.0),
            SensorKind::Vibration => (0.4, 0.25),
        }
    }
}

/// One reading of one sensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SensorReading {
    /// Device id, `0..devices`.
    pub device: u32,
    /// Site the device is installed at.
    pub site: u32,
    /// What the device measures.
    pub sensor: SensorKind,
    /// The measured value.
    pub value: f64,
    /// Event time, milliseconds since the Unix epoch.
    pub ts: EventTime,
}

impl Timestamped for SensorReading {
    fn event_time(&self) -> EventTime {
        self.ts
    }
}

/// One device's entry in the device registry: where it is, what it is, and the range its
/// readings should stay in. An entry takes effect at `since`; a newer entry of the same device
/// replaces it from its own `since` on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Device id.
    pub device: u32,
    /// Site the device is installed at.
    pub site: u32,
    /// Device model, e.g. `TMP-200`.
    pub model: String,
    /// What the device measures.
    pub sensor: SensorKind,
    /// Readings below this are out of range.
    pub low: f64,
    /// Readings above this are out of range.
    pub high: f64,
    /// When the entry takes effect, milliseconds since the Unix epoch (0: always).
    pub since: EventTime,
}

impl Timestamped for DeviceInfo {
    fn event_time(&self) -> EventTime {
        self.since
    }
}

/// Orders entries by their fields, the floats by [`f64::total_cmp`], so that a registry can be
/// kept in a differential-dataflow arrangement.
impl Eq for DeviceInfo {}

impl PartialOrd for DeviceInfo {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for DeviceInfo {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.since, self.device, self.site, &self.model, self.sensor)
            .cmp(&(other.since, other.device, other.site, &other.model, other.sensor))
            .then(self.low.total_cmp(&other.low))
            .then(self.high.total_cmp(&other.high))
    }
}

/// Settings of the IoT generator (the `[job.readings]` table of the IoT jobs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IotConfig {
    /// Number of devices.
    pub devices: u32,
    /// Number of sites the devices are spread over.
    pub sites: u32,
    /// Probability that a reading is an anomaly (far off the device's baseline).
    pub anomaly_rate: f64,
    /// Fraction of the devices that go quiet now and then (0 by default): each of them sends
    /// nothing for `quiet_for` once every `quiet_every`, at a phase of its own. Readings that
    /// would have come from a quiet device come from the next device that is not quiet.
    pub quiet_devices: f64,
    /// How long a quiet spell lasts.
    pub quiet_for: HumanDuration,
    /// How often a quiet device goes quiet.
    pub quiet_every: HumanDuration,
    /// Count, speed and event-time settings.
    pub pace: Pace,
}

impl Default for IotConfig {
    fn default() -> Self {
        IotConfig {
            devices: 1000,
            sites: 20,
            anomaly_rate: 0.001,
            quiet_devices: 0.0,
            quiet_for: HumanDuration(std::time::Duration::from_secs(300)),
            quiet_every: HumanDuration(std::time::Duration::from_secs(1800)),
            pace: Pace::default(),
        }
    }
}

/// The IoT readings model. Device `d` measures `SensorKind::ALL[d % 4]` around a per-device
/// baseline with Gaussian-like noise and rare anomalies.
#[derive(Debug, Clone)]
pub struct IotModel {
    config: IotConfig,
    clock: Clock,
}

/// The IoT readings source.
pub type IotReadings = Generator<IotModel>;

impl IotReadings {
    /// Checks the settings; keys are reported relative to the generator's table.
    pub fn new(config: &IotConfig) -> Result<Self, ConfigError> {
        if config.devices == 0 {
            return Err(ConfigError::new("devices", "must be at least 1"));
        }
        if config.sites == 0 {
            return Err(ConfigError::new("sites", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&config.anomaly_rate) {
            return Err(ConfigError::new("anomaly_rate", "must be between 0 and 1"));
        }
        if !(0.0..=1.0).contains(&config.quiet_devices) {
            return Err(ConfigError::new("quiet_devices", "must be between 0 and 1"));
        }
        if config.quiet_every.0 <= config.quiet_for.0 {
            return Err(ConfigError::new("quiet_every", "must be longer than quiet_for"));
        }
        let clock = config.pace.validate()?;
        Ok(Generator::from_model(IotModel { config: config.clone(), clock }))
    }
}

impl IotModel {
    /// The per-device hash that fixes its baseline, site, quiet phase and registry entry.
    fn device_hash(&self, device: u32) -> u64 {
        mix(self.config.pace.seed ^ 0x1e7, u64::from(device))
    }

    /// Whether `device` is in a quiet spell at `t`.
    pub fn is_quiet(&self, device: u32, t: EventTime) -> bool {
        let d = self.device_hash(device);
        if unit(mix(d, 7)) >= self.config.quiet_devices {
            return false;
        }
        let every = self.config.quiet_every.0.as_millis() as u64;
        let phase = mix(d, 8) % every;
        (t + phase) % every < self.config.quiet_for.0.as_millis() as u64
    }

    /// The registry entry the generator's devices have (in force from time 0): the device's
    /// site, a model name, and a range of its baseline ± one spread of its kind (normal
    /// readings stay within it; the anomalies of the generator fall outside).
    pub fn device_info(&self, device: u32) -> DeviceInfo {
        let sensor = SensorKind::ALL[device as usize % 4];
        let (level, spread) = sensor.baseline();
        let d = self.device_hash(device);
        let round = |x: f64| (x * 100.0).round() / 100.0;
        DeviceInfo {
            device,
            site: (d >> 32) as u32 % self.config.sites,
            model: format!("{}-{}", sensor.model_prefix(), 100 * (1 + d % 3)),
            sensor,
            low: round(level - spread),
            high: round(level + spread),
            since: 0,
        }
    }
}

/// The generator's device registry: one [`DeviceInfo`] per device, all at time 0, to join
/// with [`IotReadings`] of the same settings.
#[derive(Debug, Clone)]
pub struct RegistryModel {
    readings: IotModel,
    pace: Pace,
}

/// The device-registry source.
pub type DeviceRegistry = Generator<RegistryModel>;

impl DeviceRegistry {
    /// The registry of the devices of `readings`.
    pub fn of(readings: &IotReadings) -> Self {
        let pace =
            Pace { events: Some(u64::from(readings.model.config.devices)), ..Pace::default() };
        Generator::from_model(RegistryModel { readings: readings.model.as_ref().clone(), pace })
    }
}

impl Generate for RegistryModel {
    type Item = DeviceInfo;
    type State = ();

    fn name(&self) -> &str {
        "device-registry"
    }

    fn pace(&self) -> &Pace {
        &self.pace
    }

    fn start(&self, _first: u64, _step: u64) {}

    fn event(&self, _: &mut (), i: u64) -> (EventTime, DeviceInfo) {
        (0, self.readings.device_info(i as u32))
    }

    fn watermark(&self, _: &(), _next: u64) -> EventTime {
        0
    }
}

impl Generate for IotModel {
    type Item = SensorReading;
    type State = ();

    fn name(&self) -> &str {
        "iot-readings"
    }

    fn pace(&self) -> &Pace {
        &self.config.pace
    }

    fn start(&self, _first: u64, _step: u64) {}

    #[inline]
    fn event(&self, _: &mut (), i: u64) -> (EventTime, SensorReading) {
        let seed = self.config.pace.seed;
        let h = mix(seed, i);
        let ts = self.clock.time_of(i);
        let devices = self.config.devices;
        let mut device = (h % u64::from(devices)) as u32;
        if self.config.quiet_devices > 0.0 {
            // The first device from the drawn one on that is not quiet (if any).
            device = (0..devices)
                .map(|k| (device + k) % devices)
                .find(|&d| !self.is_quiet(d, ts))
                .unwrap_or(device);
        }
        let sensor = SensorKind::ALL[device as usize % 4];
        let (level, spread) = sensor.baseline();
        let d = self.device_hash(device);
        let base = level + spread * (unit(d) - 0.5);
        // Sum of three uniforms: a cheap bell curve with standard deviation 0.5.
        let noise = unit(mix(h, 1)) + unit(mix(h, 2)) + unit(mix(h, 3)) - 1.5;
        let mut value = base + noise * spread * 0.1;
        if unit(mix(h, 4)) < self.config.anomaly_rate {
            value += spread * if h & 1 == 0 { 3.0 } else { -3.0 };
        }
        // Sensors report two decimals.
        let value = (value * 100.0).round() / 100.0;
        let site = (d >> 32) as u32 % self.config.sites;
        (ts, SensorReading { device, site, sensor, value, ts })
    }

    fn watermark(&self, _: &(), next: u64) -> EventTime {
        self.clock.watermark(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readings_are_a_function_of_the_index() {
        let g = IotReadings::new(&IotConfig::default()).unwrap();
        let (a, b) = (g.model.event(&mut (), 12_345), g.model.event(&mut (), 12_345));
        assert_eq!(a, b);
        let (t, r) = g.model.event(&mut (), 1000);
        assert_eq!(t, r.ts);
        assert_eq!(r.ts, 1_767_225_601_000, "1000 events at 1000/s start one second in");
        assert!(r.device < 1000 && r.site < 20);
    }

    #[test]
    fn bad_settings_name_their_key() {
        let e = IotReadings::new(&IotConfig { devices: 0, ..IotConfig::default() }).unwrap_err();
        assert_eq!(e.key, "devices");
        let bad = IotConfig {
            pace: Pace { rate: Some(-1.0), ..Pace::default() },
            ..IotConfig::default()
        };
        assert_eq!(IotReadings::new(&bad).unwrap_err().key, "pace.rate");
        let bad = IotConfig { quiet_devices: 2.0, ..IotConfig::default() };
        assert_eq!(IotReadings::new(&bad).unwrap_err().key, "quiet_devices");
    }

    #[test]
    fn quiet_devices_send_nothing_while_quiet_and_the_registry_matches() {
        let config = IotConfig {
            devices: 50,
            quiet_devices: 0.5,
            quiet_for: HumanDuration(std::time::Duration::from_secs(20)),
            quiet_every: HumanDuration(std::time::Duration::from_secs(60)),
            ..IotConfig::default()
        };
        let g = IotReadings::new(&config).unwrap();
        let quiet_ones =
            (0..50).filter(|&d| (0..60_000).step_by(1000).any(|t| g.model.is_quiet(d, t)));
        assert!((15..35).contains(&quiet_ones.count()), "about half the devices go quiet");
        let mut seen = std::collections::HashSet::new();
        for i in 0..200_000 {
            let (t, r) = g.model.event(&mut (), i);
            assert!(!g.model.is_quiet(r.device, t), "reading {i} from quiet device {}", r.device);
            let info = g.model.device_info(r.device);
            assert_eq!((info.site, info.sensor), (r.site, r.sensor));
            seen.insert(r.device);
        }
        assert_eq!(seen.len(), 50);
        let registry = DeviceRegistry::of(&g);
        assert_eq!(registry.model.pace().events, Some(50));
        assert_eq!(registry.model.event(&mut (), 7).1, g.model.device_info(7));
    }
}
