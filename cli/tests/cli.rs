//! The `tributary` command-line tool: its Kubernetes manifests, read back by PyYAML (a
//! reader we did not write). Its `run` command is tested end to end with real jobs in
//! `tests/tests/cluster_run.rs`.

use std::process::Command;

fn tributary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

/// Parses a YAML stream with PyYAML and prints it back as JSON.
fn parse_yaml(yaml: &[u8]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("manifests.yaml");
    std::fs::write(&path, yaml).expect("written");
    let script = "import json, sys, yaml\n\
                  print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 runs (scripts/test.sh installs PyYAML)");
    assert!(out.status.success(), "not valid YAML: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON")
}

#[test]
fn kubernetes_manifests_are_valid_yaml_with_a_pod_per_process() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("job.toml");
    std::fs::write(&config, "[job]\nwindow = \"1m\"\n# a \"quoted\" comment: with a colon\n")
        .expect("written");
    let out = tributary()
        .args(["k8s", "iot-stats", "--image", "registry.example/iot:1.0", "-p", "3", "-w", "2"])
        .arg("--config")
        .arg(&config)
        .output()
        .expect("tributary runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let docs = parse_yaml(&out.stdout);
    let kinds: Vec<&str> =
        docs.as_array().unwrap().iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ConfigMap", "Service", "PersistentVolumeClaim", "StatefulSet"]);
    let (config_map, service, claim, set) = (&docs[0], &docs[1], &docs[2], &docs[3]);

    // The hostfile names each pod through the headless service, in ordinal order.
    let hosts: Vec<&str> = config_map["data"]["hosts"].as_str().unwrap().lines().collect();
    assert_eq!(hosts.len(), 3);
    assert_eq!(hosts[1], "iot-stats-1.iot-stats-peers.default.svc.cluster.local:2101");
    assert_eq!(
        config_map["data"]["job.toml"].as_str().unwrap(),
        std::fs::read_to_string(&config).unwrap()
    );
    assert_eq!(service["spec"]["clusterIP"], "None");
    assert_eq!(service["metadata"]["name"], set["spec"]["serviceName"]);
    assert_eq!(claim["spec"]["accessModes"][0], "ReadWriteMany");

    assert_eq!(set["spec"]["replicas"], 3);
    assert_eq!(set["spec"]["podManagementPolicy"], "Parallel");
    let pod = &set["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "registry.example/iot:1.0");
    let command: Vec<&str> =
        container["command"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
    for pair in [["--processes", "3"], ["--workers", "2"], ["--hostfile", "/etc/tributary/hosts"]] {
        assert!(command.windows(2).any(|w| w == pair), "{pair:?} in {command:?}");
    }
    // The pod's ordinal is its process id.
    assert_eq!(container["env"][0]["name"], "TRIBUTARY_PROCESS_ID");
    assert_eq!(
        container["env"][0]["valueFrom"]["fieldRef"]["fieldPath"],
        "metadata.labels['apps.kubernetes.io/pod-index']"
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/ready");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/health");
    assert_eq!(container["resources"]["limits"]["memory"], "4Gi");
    let mounts: Vec<&str> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["mountPath"].as_str().unwrap())
        .collect();
    assert_eq!(mounts, ["/etc/tributary", "/var/lib/tributary/checkpoints"]);
    assert_eq!(pod["volumes"][1]["persistentVolumeClaim"]["claimName"], claim["metadata"]["name"]);
}

#[test]
fn bad_arguments_exit_with_code_2_and_say_why() {
    let out = tributary().args(["k8s", "Bad_Name!", "--image", "x"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a Kubernetes name"));

    let out = tributary().args(["run", "/no/such/job"]).output().expect("runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`/no/such/job` is not a job binary"));
}
