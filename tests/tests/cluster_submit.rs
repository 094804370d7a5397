//! `tributary submit` against a real OpenSSH server (Debian's `openssh-server`, which
//! `scripts/test.sh` installs) on a loopback port: the job binary is copied to two "hosts"
//! (two ssh aliases of the one server, each process in its own folder), runs as a two-process
//! cluster over ssh, and prints the same rows as one process; interrupted, it stops the
//! processes on every host.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::{free_addresses, job_binary, run_job, wait_for};

const SSHD: &str = "/usr/sbin/sshd";

/// An sshd on a free loopback port that accepts one generated key; stopped when dropped.
struct Sshd {
    child: Child,
    port: u16,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", ""])
        .arg("-f")
        .arg(path)
        .status()
        .expect("ssh-keygen runs");
    assert!(status.success(), "ssh-keygen failed");
}

fn start_sshd(dir: &Path) -> Sshd {
    assert!(
        Path::new(SSHD).is_file(),
        "{SSHD} is missing: scripts/test.sh installs openssh-server"
    );
    // sshd refuses to start without its privilege separation directory.
    std::fs::create_dir_all("/run/sshd").expect("/run/sshd (the test runs as root in CI)");
    keygen(&dir.join("host_key"));
    keygen(&dir.join("user_key"));
    std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).expect("copied");
    let address = free_addresses(1).remove(0);
    let port: u16 = address.rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {keys}\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\nPidFile {pid}\n\
             Subsystem sftp internal-sftp\n",
            host = dir.join("host_key").display(),
            keys = dir.join("authorized_keys").display(),
            pid = dir.join("sshd.pid").display(),
        ),
    )
    .expect("written");
    let child = Command::new(SSHD)
        .args(["-D", "-e", "-f"])
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sshd starts");
    let sshd = Sshd { child, port };
    wait_for("sshd to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    sshd
}

/// An ssh client configuration naming the server `node0` and `node1`.
fn client_config(dir: &Path, sshd: &Sshd) -> PathBuf {
    let path = dir.join("ssh_config");
    std::fs::write(
        &path,
        format!(
            "Host node0 node1\n  HostName 127.0.0.1\n  Port {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n",
            sshd.port,
            dir.join("user_key").display()
        ),
    )
    .expect("written");
    path
}

fn sorted_stdout(stdout: &[u8]) -> Vec<String> {
    let mut lines: Vec<String> =
        String::from_utf8_lossy(stdout).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// An sshd, an ssh configuration and a hosts file naming it twice, in a temporary folder.
/// One at a time: each test copies a 200 MB binary twice and runs four workers.
struct TwoHosts {
    // Dropped in this order: the server, then its folder, then the lock.
    _sshd: Sshd,
    dir: tempfile::TempDir,
    ssh_config: PathBuf,
    hosts: PathBuf,
    _alone: std::sync::MutexGuard<'static, ()>,
}

static ALONE: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl TwoHosts {
    fn new() -> TwoHosts {
        let alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::tempdir().expect("temp dir");
        let sshd = start_sshd(dir.path());
        let ssh_config = client_config(dir.path(), &sshd);
        let peers = free_addresses(2);
        let hosts = dir.path().join("hosts.txt");
        let text = format!("# two processes\nnode0 {}\nnode1 {}\n", peers[0], peers[1]);
        std::fs::write(&hosts, text).expect("written");
        TwoHosts { _sshd: sshd, dir, ssh_config, hosts, _alone: alone }
    }

    /// `tributary submit` of the test job with `args` to both hosts, 2 workers each.
    fn submit(&self, args: &[&str]) -> Command {
        let mut command = Command::new(job_binary().with_file_name("tributary"));
        command
            .args(["submit", "--hosts"])
            .arg(&self.hosts)
            .arg("-F")
            .arg(&self.ssh_config)
            .arg("--remote-dir")
            .arg(self.remote())
            .args(["--workers", "2", "--max-restarts", "0"])
            .arg(job_binary())
            .arg("--")
            .arg("iot-stats")
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        command
    }

    fn remote(&self) -> PathBuf {
        self.dir.path().join("remote")
    }
}

#[test]
fn a_job_submitted_to_two_hosts_over_ssh_gives_the_rows_of_one_process() {
    let cluster = TwoHosts::new();
    let args = ["--set", "job.readings.pace.events=40000", "--set", "job.readings.devices=20"];
    let single = run_job("iot-stats", &args);
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));

    let out = cluster.submit(&args).output().expect("tributary runs");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("copying `tributary-test-job` to node1:"), "{log}");
    assert!(cluster.remote().join("tributary-test-job-p1/tributary-test-job").is_file());
    let rows = sorted_stdout(&out.stdout);
    assert!(rows.len() >= 20, "{} rows\n{log}", rows.len());
    assert_eq!(rows, sorted_stdout(&single.stdout), "two hosts vs one process");
}

/// How many processes run a binary from under `remote` (the remote job processes).
fn remote_processes(remote: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else { return 0 };
    entries
        .filter_map(|e| std::fs::read_link(e.ok()?.path().join("exe")).ok())
        .filter(|exe| exe.starts_with(remote))
        .count()
}

#[test]
fn interrupting_a_submitted_job_stops_it_on_every_host() {
    let cluster = TwoHosts::new();
    // A job that would take minutes: 100 000 readings at 1 000 per second.
    let args = ["--set", "job.readings.pace.events=100000", "--set", "job.readings.pace.rate=1000"];
    let mut tributary = cluster.submit(&args).stdout(Stdio::null()).spawn().expect("runs");
    let remote = cluster.remote().join("tributary-test-job-p1/tributary-test-job");
    wait_for("both remote processes", Duration::from_secs(60), || {
        (remote_processes(&cluster.remote()) == 2).then_some(())
    });
    assert!(remote.is_file());
    kill(Pid::from_raw(tributary.id() as i32), Signal::SIGINT).expect("SIGINT");
    let status = tributary.wait().expect("tributary ends");
    assert_eq!(status.code(), Some(130), "{status}");
    wait_for("the remote processes to stop", Duration::from_secs(30), || {
        (remote_processes(&cluster.remote()) == 0).then_some(())
    });
}
