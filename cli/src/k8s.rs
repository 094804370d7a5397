//! `tributary k8s`: Kubernetes manifests for a job.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context};

use crate::K8sArgs;

pub(crate) fn k8s(args: &K8sArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?,
        ),
        None => None,
    };
    let yaml = manifests(args, config.as_deref())?;
    std::io::stdout().write_all(yaml.as_bytes()).context("cannot write the manifests")
}

/// A JSON string, which is also a valid YAML scalar: every value below is quoted this way.
fn q(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialise")
}

/// Whether `name` is a valid Kubernetes object name (an RFC 1123 label).
fn valid_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
    !name.is_empty()
        && name.len() <= 52
        && name.chars().all(ok)
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The manifests, as one multi-document YAML stream.
fn manifests(args: &K8sArgs, config: Option<&str>) -> anyhow::Result<String> {
    let name = args.name.clone().unwrap_or_else(|| {
        Path::new(&args.job).file_name().map_or_else(
            || args.job.clone(),
            |n| n.to_string_lossy().to_ascii_lowercase().replace('_', "-"),
        )
    });
    if !valid_name(&name) {
        bail!("`{name}` is not a Kubernetes name (lower-case letters, digits, `-`; pass --name)");
    }
    let ns = &args.namespace;
    let service = format!("{name}-peers");
    let hosts: String = (0..args.processes)
        .map(|i| format!("{name}-{i}.{service}.{ns}.svc.cluster.local:{}\n", args.port))
        .collect();
    let labels = format!("app.kubernetes.io/name: {}\n", q(&name));
    let indent = |text: &str, by: usize| -> String {
        let pad = " ".repeat(by);
        text.lines().map(|l| format!("{pad}{l}\n")).collect()
    };
    let block = |text: &str| format!("|\n{}", indent(text, 4));
    let mut command = vec![
        args.job.clone(),
        "--processes".into(),
        args.processes.to_string(),
        "--workers".into(),
        args.workers.to_string(),
        "--hostfile".into(),
        "/etc/tributary/hosts".into(),
        "--metrics-addr".into(),
        format!("0.0.0.0:{}", args.metrics_port),
        "--set".into(),
        "runtime.checkpoint.dir=\"/var/lib/tributary/checkpoints\"".into(),
    ];
    if config.is_some() {
        command.extend(["--config".into(), "/etc/tributary/job.toml".into()]);
    }
    let command: String = command.iter().map(|c| format!("            - {}\n", q(c))).collect();
    let config_entry = config.map_or(String::new(), |c| format!("  job.toml: {}", block(c)));
    let storage_class = args
        .storage_class
        .as_ref()
        .map_or(String::new(), |c| format!("  storageClassName: {}\n", q(c)));
    Ok(format!(
        r#"# Tributary job `{name}`: {processes} processes x {workers} workers.
# Apply with `kubectl apply -f`; see docs/cluster.md.
apiVersion: v1
kind: ConfigMap
metadata:
  name: {name_q}
  namespace: {ns_q}
  labels:
{labels_4}data:
  hosts: {hosts_block}{config_entry}---
# Stable DNS names for the pods (name-0.{service}, ...): the addresses in the hostfile.
apiVersion: v1
kind: Service
metadata:
  name: {service_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  clusterIP: None
  publishNotReadyAddresses: true
  selector:
{labels_4}  ports:
    - name: peers
      port: {port}
    - name: metrics
      port: {metrics_port}
---
# Checkpoints: every process writes its part and reads the manifest process 0 writes, so
# the volume is shared (ReadWriteMany).
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {checkpoints_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  accessModes: ["ReadWriteMany"]
{storage_class}  resources:
    requests:
      storage: {size_q}
---
# One pod per process; the pod's ordinal is its process id (Kubernetes 1.28+ labels each
# pod with its index). All pods start together: the processes connect to each other first.
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name_q}
  namespace: {ns_q}
  labels:
{labels_4}spec:
  serviceName: {service_q}
  replicas: {processes}
  podManagementPolicy: Parallel
  selector:
    matchLabels:
{labels_6}  template:
    metadata:
      labels:
{labels_8}    spec:
      containers:
        - name: job
          image: {image_q}
          command:
{command}          env:
            - name: TRIBUTARY_PROCESS_ID
              valueFrom:
                fieldRef:
                  fieldPath: metadata.labels['apps.kubernetes.io/pod-index']
          ports:
            - name: peers
              containerPort: {port}
            - name: metrics
              containerPort: {metrics_port}
          readinessProbe:
            httpGet:
              path: /ready
              port: metrics
            periodSeconds: 5
          livenessProbe:
            httpGet:
              path: /health
              port: metrics
            initialDelaySeconds: 10
            periodSeconds: 10
          resources:
            requests:
              cpu: {cpu_q}
              memory: {memory_q}
            limits:
              cpu: {cpu_q}
              memory: {memory_q}
          volumeMounts:
            - name: config
              mountPath: /etc/tributary
              readOnly: true
            - name: checkpoints
              mountPath: /var/lib/tributary/checkpoints
      volumes:
        - name: config
          configMap:
            name: {name_q}
        - name: checkpoints
          persistentVolumeClaim:
            claimName: {checkpoints_q}
"#,
        processes = args.processes,
        workers = args.workers,
        name_q = q(&name),
        ns_q = q(ns),
        service_q = q(&service),
        checkpoints_q = q(&format!("{name}-checkpoints")),
        labels_4 = indent(&labels, 4),
        labels_6 = indent(&labels, 6),
        labels_8 = indent(&labels, 8),
        hosts_block = block(&hosts),
        port = args.port,
        metrics_port = args.metrics_port,
        size_q = q(&args.checkpoint_size),
        image_q = q(&args.image),
        cpu_q = q(&args.cpu),
        memory_q = q(&args.memory),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_kubernetes_labels() {
        assert!(valid_name("iot-stats"));
        assert!(!valid_name("IoT"));
        assert!(!valid_name("-x"));
        assert!(!valid_name(""));
    }
}
