//! `tributary submit`: one process per host over ssh.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use anyhow::{bail, Context};

use crate::supervise::{describe, supervise, Cluster, TempFile};
use crate::SubmitArgs;

/// One line of a `submit` hosts file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Host {
    /// Where ssh connects: `user@host` or a host of the ssh configuration.
    destination: String,
    /// Where the other processes connect: `host:port`.
    address: String,
}

/// Reads a hosts file: `DESTINATION [HOST:PORT]` per line, `#` comments.
fn read_hosts(path: &Path, port: u16) -> anyhow::Result<Vec<Host>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the hosts file `{}`", path.display()))?;
    let mut hosts = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let fields: Vec<&str> = line.split_whitespace().collect();
        let at = || format!("{}:{}", path.display(), number + 1);
        let host = match fields[..] {
            [] => continue,
            [destination] => {
                let name = destination.rsplit('@').next().unwrap_or(destination);
                Host { destination: destination.into(), address: format!("{name}:{port}") }
            }
            [destination, address]
                if address.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) =>
            {
                Host { destination: destination.into(), address: address.into() }
            }
            [_, address] => bail!("{}: `{address}` is not a host:port address", at()),
            _ => bail!("{}: expected `DESTINATION [HOST:PORT]`, found `{line}`", at()),
        };
        hosts.push(host);
    }
    if hosts.is_empty() {
        bail!("{}: no hosts", path.display());
    }
    Ok(hosts)
}

pub(crate) fn submit(args: &SubmitArgs) -> anyhow::Result<ExitCode> {
    if !args.job.is_file() {
        bail!("`{}` is not a job binary (no such file)", args.job.display());
    }
    let hosts = read_hosts(&args.hosts, args.port)?;
    let name = args.job.file_name().context("the job binary has a file name")?.to_string_lossy();
    let hostfile: String = hosts.iter().map(|h| format!("{}\n", h.address)).collect();
    let hostfile = TempFile::write("hosts", &hostfile)?;
    let ssh = |program: &str| {
        let mut command = Command::new(program);
        if let Some(config) = &args.ssh_config {
            command.arg("-F").arg(config);
        }
        command.args(["-o", "BatchMode=yes"]);
        command
    };
    let quote = |arg: &str| -> anyhow::Result<String> {
        Ok(shlex::try_quote(arg).context("an argument with a NUL byte")?.into_owned())
    };
    let dirs: Vec<String> =
        (0..hosts.len()).map(|i| format!("{}/{name}-p{i}", args.remote_dir)).collect();

    // Copy the binary, the hostfile and the configuration, one folder per process.
    for (i, host) in hosts.iter().enumerate() {
        eprintln!("tributary: copying `{name}` to {}:{}", host.destination, dirs[i]);
        let status = ssh("ssh")
            .arg(&host.destination)
            .arg(format!("mkdir -p {}", quote(&dirs[i])?))
            .stdin(Stdio::null())
            .status()
            .context("cannot run ssh")?;
        if !status.success() {
            bail!("ssh {} failed ({})", host.destination, describe(status));
        }
        let mut scp = ssh("scp");
        scp.arg("-q").arg(&args.job).arg(&hostfile.0);
        if let Some(config) = &args.config {
            scp.arg(config);
        }
        let status = scp
            .arg(format!("{}:{}/", host.destination, dirs[i]))
            .stdin(Stdio::null())
            .status()
            .context("cannot run scp")?;
        if !status.success() {
            bail!("scp to {} failed ({})", host.destination, describe(status));
        }
    }

    let hostfile_name =
        hostfile.0.file_name().context("the hostfile has a name")?.to_string_lossy().into_owned();
    let config_name = match &args.config {
        Some(c) => Some(
            c.file_name().context("the config has a file name")?.to_string_lossy().into_owned(),
        ),
        None => None,
    };
    // Per process: the ssh destination and the command line for its shell.
    let mut remotes = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        let mut job: Vec<String> = vec![format!("./{name}")];
        for arg in &args.args {
            job.push(arg.to_str().context("job arguments must be UTF-8 for ssh")?.to_owned());
        }
        let processes = hosts.len().to_string();
        let workers = args.workers.to_string();
        let id = i.to_string();
        let flags = ["--processes", &processes, "--process-id", &id, "--workers", &workers];
        job.extend(flags.iter().map(|f| f.to_string()));
        job.extend(["--hostfile".to_owned(), hostfile_name.clone()]);
        if let Some(config) = &config_name {
            job.extend(["--config".to_owned(), config.clone()]);
        }
        let job: Vec<String> = job.iter().map(|a| quote(a)).collect::<anyhow::Result<_>>()?;
        // The job runs in the background of a shell that stops it (SIGTERM) when its stdin
        // closes: when this tool stops it, or the connection drops. (A background list
        // reads /dev/null, so the watcher gets stdin as fd 3.)
        let remote = format!(
            "cd {} && exec sh -c 'exec 3<&0; \"$@\" & job=$!; \
             (cat <&3 >/dev/null; kill -TERM $job) >/dev/null 2>&1 & wait $job' sh {}",
            quote(&dirs[i])?,
            job.join(" ")
        );
        remotes.push((&host.destination, remote));
    }
    supervise(args.restarts, || {
        let commands = (remotes.iter())
            .map(|(destination, remote)| {
                let mut command = ssh("ssh");
                command.arg(destination).arg(remote);
                command
            })
            .collect();
        Cluster::start(commands, Path::new("ssh"), None)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_files_name_a_destination_and_maybe_an_address() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("hosts.txt");
        let read = |text: &str| {
            std::fs::write(&path, text).expect("written");
            read_hosts(&path, 2101)
        };
        let hosts = read("# cluster\nops@10.0.0.1\n\nbox 10.0.0.2:7000  # gpu\n").expect("valid");
        assert_eq!(
            hosts,
            [
                Host { destination: "ops@10.0.0.1".into(), address: "10.0.0.1:2101".into() },
                Host { destination: "box".into(), address: "10.0.0.2:7000".into() },
            ]
        );
        let error = read("a\nb 10.0.0.2\n").unwrap_err().to_string();
        assert!(error.ends_with("hosts.txt:2: `10.0.0.2` is not a host:port address"), "{error}");
        assert!(read("a b c\n").unwrap_err().to_string().contains("expected `DESTINATION"));
        assert!(read("# none\n").unwrap_err().to_string().contains("no hosts"));
    }
}
