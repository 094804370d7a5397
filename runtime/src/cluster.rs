//! Connecting the processes of a cluster before timely takes over the sockets.
//!
//! Timely's own connection set-up retries an unreachable peer forever and prints to stdout,
//! where our results go. This module makes the same connections (process `i` connects to every
//! lower index and accepts every higher one) within a deadline, checks that each peer runs a
//! job of the same name and cluster size, and names the address that failed. The connected
//! sockets are then handed to timely's networking layer
//! (`initialize_networking_from_sockets`), which carries all dataflow traffic.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bytes that open every handshake, so a stray connection is recognised.
const MAGIC: &[u8; 8] = b"TRIBUTRY";
/// Handshake format version.
const VERSION: u32 = 1;
/// Time between connection attempts to a peer that is not up yet.
const RETRY: Duration = Duration::from_millis(100);

/// What each process sends after connecting.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Hello {
    process: u64,
    processes: u64,
    job: String,
}

impl Hello {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.job.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.process.to_le_bytes());
        out.extend_from_slice(&self.processes.to_le_bytes());
        out.extend_from_slice(&(self.job.len() as u32).to_le_bytes());
        out.extend_from_slice(self.job.as_bytes());
        out
    }

    fn read(stream: &mut TcpStream) -> std::io::Result<Result<Hello, String>> {
        let mut head = [0u8; 32];
        stream.read_exact(&mut head)?;
        if &head[..8] != MAGIC {
            return Ok(Err("the peer is not a Tributary process".into()));
        }
        let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
        if version != VERSION {
            return Ok(Err(format!("the peer speaks handshake version {version}, not {VERSION}")));
        }
        let process = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
        let processes = u64::from_le_bytes(head[20..28].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(head[28..32].try_into().expect("4 bytes")) as usize;
        if len > 4096 {
            return Ok(Err("the peer sent an oversized job name".into()));
        }
        let mut job = vec![0; len];
        stream.read_exact(&mut job)?;
        Ok(Ok(Hello { process, processes, job: String::from_utf8_lossy(&job).into_owned() }))
    }
}

/// Connects process `me` to every other process of `addresses` within `timeout`. Returns one
/// socket per process, `None` at `me`, as timely's networking expects.
pub fn connect(
    job: &str,
    addresses: &[String],
    me: usize,
    timeout: Duration,
) -> Result<Vec<Option<TcpStream>>> {
    let deadline = Instant::now() + timeout;
    let processes = addresses.len();
    let hello = Hello { process: me as u64, processes: processes as u64, job: job.to_owned() };
    let fail = |reason: String| Error::Startup(reason);

    let listener = retry_until(deadline, || resolve(&addresses[me]))
        .and_then(TcpListener::bind)
        .map_err(|e| fail(format!("process {me} cannot listen on {}: {e}", addresses[me])))?;
    listener.set_nonblocking(true).map_err(|e| fail(e.to_string()))?;

    let mut sockets: Vec<Option<TcpStream>> = (0..processes).map(|_| None).collect();
    // Connect to every lower index.
    for (peer, address) in addresses.iter().enumerate().take(me) {
        let mut stream = connect_one(address, deadline).map_err(|e| {
            fail(format!(
                "cannot reach process {peer} at {address} within {}: {e}",
                humantime::format_duration(timeout)
            ))
        })?;
        stream.write_all(&hello.encode()).map_err(|e| fail(format!("process {peer}: {e}")))?;
        let theirs = read_hello(&mut stream, deadline)
            .map_err(|e| fail(format!("process {peer} at {address}: {e}")))?;
        check(&hello, &theirs, peer).map_err(fail)?;
        sockets[peer] = Some(stream);
    }
    // Accept every higher index.
    let mut missing = processes - me - 1;
    while missing > 0 {
        match listener.accept() {
            Ok((mut stream, from)) => {
                stream.set_nonblocking(false).map_err(|e| fail(e.to_string()))?;
                let theirs = match read_hello(&mut stream, deadline) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(%from, error = %e, "ignoring a connection that did not handshake");
                        continue;
                    }
                };
                let peer = theirs.process as usize;
                if peer <= me || peer >= processes || sockets[peer].is_some() {
                    return Err(fail(format!(
                        "unexpected connection from {from} claiming to be process {peer}"
                    )));
                }
                check(&hello, &theirs, peer).map_err(fail)?;
                stream
                    .write_all(&hello.encode())
                    .map_err(|e| fail(format!("process {peer}: {e}")))?;
                sockets[peer] = Some(stream);
                missing -= 1;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    let waiting: Vec<String> = (me + 1..processes)
                        .filter(|&p| sockets[p].is_none())
                        .map(|p| format!("process {p} ({})", addresses[p]))
                        .collect();
                    return Err(fail(format!(
                        "{} did not connect to {} within {}",
                        waiting.join(", "),
                        addresses[me],
                        humantime::format_duration(timeout)
                    )));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(fail(format!("accepting on {}: {e}", addresses[me]))),
        }
    }
    for stream in sockets.iter().flatten() {
        stream.set_nodelay(true).map_err(|e| fail(e.to_string()))?;
        stream.set_read_timeout(None).map_err(|e| fail(e.to_string()))?;
    }
    tracing::info!(process = me, processes, "connected to all peers");
    Ok(sockets)
}

/// Connects to `address`, resolving it again on every attempt (a peer's name may appear
/// only once it has started), until `deadline`.
fn connect_one(address: &str, deadline: Instant) -> std::io::Result<TcpStream> {
    retry_until(deadline, || {
        let target = resolve(address)?;
        let left = deadline.saturating_duration_since(Instant::now());
        TcpStream::connect_timeout(&target, left.max(Duration::from_millis(1)))
    })
}

/// The first socket address `address` resolves to.
fn resolve(address: &str) -> std::io::Result<std::net::SocketAddr> {
    address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the address resolves to nothing")
    })
}

/// Calls `attempt` every [`RETRY`] until it succeeds or `deadline` passes (then its last
/// error).
fn retry_until<T>(
    deadline: Instant,
    mut attempt: impl FnMut() -> std::io::Result<T>,
) -> std::io::Result<T> {
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(e) if Instant::now() + RETRY >= deadline => return Err(e),
            Err(_) => std::thread::sleep(RETRY),
        }
    }
}

fn read_hello(stream: &mut TcpStream, deadline: Instant) -> std::result::Result<Hello, String> {
    let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(100));
    stream.set_read_timeout(Some(left)).map_err(|e| e.to_string())?;
    match Hello::read(stream) {
        Ok(result) => result,
        Err(e) => Err(format!("no handshake: {e}")),
    }
}

fn check(mine: &Hello, theirs: &Hello, peer: usize) -> std::result::Result<(), String> {
    if theirs.process as usize != peer {
        return Err(format!("process {peer} says it is process {}", theirs.process));
    }
    if theirs.processes != mine.processes || theirs.job != mine.job {
        return Err(format!(
            "process {peer} runs job `{}` with {} processes, this one job `{}` with {}",
            theirs.job, theirs.processes, mine.job, mine.processes
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn free_addresses(n: usize) -> Vec<String> {
        let listeners: Vec<_> =
            (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect();
        listeners.iter().map(|l| l.local_addr().expect("addr").to_string()).collect()
    }

    #[test]
    fn three_processes_connect() {
        let addresses = free_addresses(3);
        let handles: Vec<_> = (0..3)
            .map(|me| {
                let addresses = addresses.clone();
                std::thread::spawn(move || connect("j", &addresses, me, Duration::from_secs(10)))
            })
            .collect();
        for (me, h) in handles.into_iter().enumerate() {
            let sockets = h.join().expect("no panic").expect("connected");
            assert_eq!(sockets.iter().filter(|s| s.is_some()).count(), 2);
            assert!(sockets[me].is_none());
        }
    }

    #[test]
    fn an_absent_peer_is_named_within_the_timeout() {
        let addresses = free_addresses(2);
        let started = Instant::now();
        let e = connect("j", &addresses, 1, Duration::from_millis(500)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = e.to_string();
        assert!(text.contains(&format!("cannot reach process 0 at {}", addresses[0])), "{text}");

        let e = connect("j", &addresses, 0, Duration::from_millis(300)).unwrap_err();
        assert!(e.to_string().contains("process 1"), "{e}");
    }

    #[test]
    fn a_peer_of_another_job_is_refused() {
        let addresses = free_addresses(2);
        let a = addresses.clone();
        let other = std::thread::spawn(move || connect("other", &a, 1, Duration::from_secs(5)));
        let e = connect("mine", &addresses, 0, Duration::from_secs(5)).unwrap_err();
        assert!(e.to_string().contains("runs job `other`"), "{e}");
        assert!(other.join().expect("no panic").is_err());
    }
}
