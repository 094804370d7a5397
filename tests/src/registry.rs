//! Apicurio Registry on free loopback ports: a real schema registry (Confluent-compatible API
//! under `/apis/ccompat/v7`) for the Avro end-to-end tests.
//!
//! `scripts/install-registry.sh` installs it (and a Java 21+ runtime) into a cache outside the
//! clone the first time. The registry keeps its schemas in memory (H2); it runs until the
//! test process ends: a shell between the test and Java kills Java when its standard input,
//! the test's end of a pipe, closes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

/// How long the registry may take to be ready (about 5 s here; a cold JVM on a busy machine
/// takes longer).
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A running schema registry.
pub struct SchemaRegistry {
    _process: Child,
    /// The base URL of the Confluent-compatible API, for `schema.registry.url`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl SchemaRegistry {
    /// One registry for the whole test process, started on first use; tests on it use
    /// subjects of their own.
    pub fn shared() -> &'static SchemaRegistry {
        static SHARED: OnceLock<SchemaRegistry> = OnceLock::new();
        SHARED.get_or_init(SchemaRegistry::start)
    }

    /// A registry of its own, for a test that stops it ([`SchemaRegistry::stop`]); dropped, it
    /// stops too.
    pub fn start() -> SchemaRegistry {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let install = Command::new(root.join("scripts/install-registry.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("scripts/install-registry.sh runs");
        assert!(install.status.success(), "installing the schema registry failed");
        let home = PathBuf::from(String::from_utf8_lossy(&install.stdout).trim());
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = crate::free_addresses(2);
        let port = |address: &str| address.rsplit(':').next().expect("a port").to_owned();
        let (http, management) = (port(&ports[0]), port(&ports[1]));
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let process = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" </dev/null & pid=$!; cat >/dev/null; kill $pid; wait $pid"#)
            .arg("sh")
            .arg(home.join("bin/java"))
            .args(["-Xms32m", "-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg("-XX:-UsePerfData")
            .arg(format!("-Djava.io.tmpdir={}", dir.path().display()))
            .arg("-Dquarkus.http.host=127.0.0.1")
            .arg(format!("-Dquarkus.http.port={http}"))
            .arg("-Dquarkus.management.host=127.0.0.1")
            .arg(format!("-Dquarkus.management.port={management}"))
            .arg("-jar")
            .arg(home.join("quarkus-run.jar"))
            .current_dir(dir.path())
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("java starts");
        let ready = format!("http://127.0.0.1:{management}/health/ready");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .new_agent();
        let log = dir.path().join("registry.log");
        crate::wait_for_every(
            "the schema registry to be ready",
            START_TIMEOUT,
            Duration::from_millis(50),
            || {
                let ok = agent.get(&ready).call().is_ok_and(|r| r.status() == 200);
                if !ok
                    && std::fs::read_to_string(&log)
                        .is_ok_and(|l| l.contains("Exception in thread"))
                {
                    panic!(
                        "the schema registry failed: {}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                ok.then_some(())
            },
        );
        SchemaRegistry {
            _process: process,
            url: format!("http://127.0.0.1:{http}/apis/ccompat/v7"),
            _dir: dir,
        }
    }

    /// Stops the registry and waits until it has: from then on its port refuses connections.
    pub fn stop(mut self) {
        // Closing the shell's standard input makes it kill Java and wait for it.
        drop(self._process.stdin.take());
        let _ = self._process.wait();
    }

    /// Sets the compatibility level of `subject` (`BACKWARD`, `FULL`, `NONE`...); Apicurio's
    /// default is `NONE`, Confluent's `BACKWARD`.
    pub fn set_compatibility(&self, subject: &str, level: &str) {
        let answer = ureq::put(&format!("{}/config/{subject}", self.url))
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .send(format!(r#"{{"compatibility":"{level}"}}"#))
            .expect("the registry answers");
        assert_eq!(answer.status(), 200, "compatibility of {subject}");
    }
}
