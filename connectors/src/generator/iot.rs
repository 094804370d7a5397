//! Generated IoT sensor readings.

use serde::{Deserialize, Serialize};
use tributary_runtime::{ConfigError, EventTime, Timestamped};

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
    /// Count, speed and event-time settings.
    pub pace: Pace,
}

impl Default for IotConfig {
    fn default() -> Self {
        IotConfig { devices: 1000, sites: 20, anomaly_rate: 0.001, pace: Pace::default() }
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
        let clock = config.pace.validate()?;
        Ok(Generator::from_model(IotModel { config: config.clone(), clock }))
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
        let device = (h % u64::from(self.config.devices)) as u32;
        let sensor = SensorKind::ALL[device as usize % 4];
        let (level, spread) = sensor.baseline();
        let d = mix(seed ^ 0x1e7, u64::from(device));
        let base = level + spread * (unit(d) - 0.5);
        // Sum of three uniforms: a cheap bell curve with standard deviation 0.5.
        let noise = unit(mix(h, 1)) + unit(mix(h, 2)) + unit(mix(h, 3)) - 1.5;
        let mut value = base + noise * spread * 0.1;
        if unit(mix(h, 4)) < self.config.anomaly_rate {
            value += spread * if h & 1 == 0 { 3.0 } else { -3.0 };
        }
        // Sensors report two decimals.
        let value = (value * 100.0).round() / 100.0;
        let ts = self.clock.time_of(i);
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
    }
}
