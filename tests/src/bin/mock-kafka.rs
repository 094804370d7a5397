//! librdkafka's mock Kafka cluster in a process of its own, so that a test can kill the jobs
//! writing to it with SIGKILL: creates the topics given as `name:partitions`, prints the
//! bootstrap address on one line, and serves until its standard input closes.
//!
//! The mock speaks the transactional protocol (producer ids, epochs, `EndTxn`) but keeps no
//! transaction state: consumers see the records of aborted transactions too.

use std::io::{Read, Write};
use std::process::ExitCode;

use rdkafka::mocking::MockCluster;

fn main() -> ExitCode {
    let Ok(mock) = MockCluster::new(1) else {
        return ExitCode::FAILURE;
    };
    for topic in std::env::args().skip(1) {
        let (name, partitions) = topic.split_once(':').unwrap_or((&topic, "1"));
        let Ok(partitions) = partitions.parse() else {
            let _ = writeln!(std::io::stderr(), "bad partition count in `{topic}`");
            return ExitCode::from(2);
        };
        if mock.create_topic(name, partitions, 1).is_err() {
            return ExitCode::FAILURE;
        }
    }
    if writeln!(std::io::stdout(), "{}", mock.bootstrap_servers()).is_err() {
        return ExitCode::FAILURE;
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    ExitCode::SUCCESS
}
