//! Support shared by the end-to-end tests (`tests/`) and the benchmark harness (`bench`): a
//! Tansu broker on a free loopback port, free ports, and waiting for another process.

pub mod tansu;

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
pub fn wait_for<T>(
    what: &str,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "waited {timeout:?} for {what}");
        // The poll interval: the other process publishes nothing to wait on.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
