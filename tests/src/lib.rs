//! Support shared by the end-to-end tests (`tests/`) and the benchmark harness (`bench`): an
//! Apache Kafka broker and a schema registry on free loopback ports, free ports, and waiting
//! for another process.

pub mod kafka;
pub mod registry;

use std::time::Duration;

/// `n` distinct free ports on 127.0.0.1, as `host:port` strings.
pub fn free_addresses(n: usize) -> Vec<String> {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind to a free port"))
        .collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").to_string()).collect()
}

/// Waits for another process to make progress: calls `check` until it returns `Some`, and
/// panics naming `what` if that takes longer than `timeout`. Tests use it only to watch a
/// child process (a job or the broker) whose progress they cannot be told of; in-process
/// dataflows are driven by their frontiers instead.
pub fn wait_for<T>(what: &str, timeout: Duration, check: impl FnMut() -> Option<T>) -> T {
    // The poll interval: the other process publishes nothing to wait on.
    wait_for_every(what, timeout, Duration::from_millis(20), check)
}

/// [`wait_for`], calling `check` every `interval`.
pub fn wait_for_every<T>(
    what: &str,
    timeout: Duration,
    interval: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "waited {timeout:?} for {what}");
        std::thread::sleep(interval);
    }
}
