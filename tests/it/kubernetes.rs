//! Issue 19: the Kubernetes manifests (deploy/kubernetes/) name what the node really serves. The
//! ConfigMap's node.toml loads with the real schema; the StatefulSet's container ports are its
//! listeners' ports, its probes ask the metrics listener for `/healthz` and `/readyz`, its mounts
//! are `data_dir` and the files node.toml names, which are the RUNBOOK's install list; only the
//! peer port is open to anyone (NetworkPolicy) and published (LoadBalancer). Then a node started
//! from that node.toml (init's certificates, loopback addresses) answers the probes' paths.
//!
//! The YAML is read line by line (no YAML crate for a test): the manifests are written in the
//! one indentation style this reads. `.ci/run` validates them against Kubernetes' schemas.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use hanoi247::config::NodeConfig;

use crate::install_list::runbook_install_list;
use crate::operator_view::http_get;
use crate::support::*;

fn manifest(file: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/kubernetes").join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The text of the block scalar `key: |` (its lines, their common indentation removed).
fn block_scalar(text: &str, key: &str) -> String {
    let mut lines = text.lines().skip_while(|l| l.trim() != format!("{key}: |"));
    let Some(head) = lines.next() else { panic!("no block scalar {key}") };
    let body: Vec<&str> = lines.take_while(|l| l.trim().is_empty() || indent(l) > indent(head)).collect();
    let common = body.iter().filter(|l| !l.trim().is_empty()).map(|l| indent(l)).min().unwrap_or(0);
    body.iter().map(|l| l.get(common..).unwrap_or("")).collect::<Vec<_>>().join("\n") + "\n"
}

/// The value of `key: value` on a line, unquoted.
fn value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim().trim_start_matches("- ").strip_prefix(key)?.strip_prefix(':')?;
    Some(rest.trim().trim_matches('"'))
}

/// The first `key: value` at or after line `from`.
fn next_value<'a>(lines: &[&'a str], from: usize, key: &str) -> &'a str {
    lines[from..].iter().find_map(|l| value(l, key)).unwrap_or_else(|| panic!("no {key} after line {from}"))
}

/// The container's ports: name → containerPort.
fn container_ports(lines: &[&str]) -> BTreeMap<String, u16> {
    let mut ports = BTreeMap::new();
    for (i, line) in lines.iter().enumerate() {
        if let Some(port) = value(line, "containerPort") {
            let name = value(lines[i - 1], "name").expect("`- name:` right above each containerPort");
            ports.insert(name.to_owned(), port.parse().unwrap());
        }
    }
    ports
}

/// The list items under the line `section:` (each item's lines), up to the next key at the
/// section's indentation or less.
fn items<'a>(lines: &[&'a str], section: &str) -> Vec<Vec<&'a str>> {
    let start =
        lines.iter().position(|l| l.trim() == format!("{section}:")).unwrap_or_else(|| panic!("{section}"));
    let base = indent(lines[start]);
    let mut out: Vec<Vec<&str>> = Vec::new();
    for line in &lines[start + 1..] {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // A list may sit at its key's indentation ("key:\n- a") or deeper.
        if indent(line) < base || (indent(line) == base && !line.trim_start().starts_with("- ")) {
            break;
        }
        let item_start = out.first().and_then(|first| first.first()).map_or(indent(line), |l| indent(l));
        if line.trim_start().starts_with("- ") && indent(line) == item_start {
            out.push(vec![line]);
        } else if let Some(item) = out.last_mut() {
            item.push(line);
        }
    }
    out
}

#[test]
fn the_manifests_name_the_ports_paths_and_files_the_node_serves() {
    let scratch = tempfile::tempdir().unwrap();
    let node_toml = scratch.path().join("node.toml");
    std::fs::write(&node_toml, block_scalar(&manifest("configmap.yaml"), "node.toml")).unwrap();
    let config = NodeConfig::load(&node_toml).unwrap_or_else(|e| panic!("the ConfigMap's node.toml: {e}"));

    let statefulset = manifest("statefulset.yaml");
    let lines: Vec<&str> = statefulset.lines().collect();
    let ports = container_ports(&lines);
    let served = BTreeMap::from([
        ("console".to_owned(), config.console.listen.port()),
        ("desk".to_owned(), config.listen.desk.port()),
        ("metrics".to_owned(), config.metrics.listen.port()),
        ("peer".to_owned(), config.listen.peer.port()),
    ]);
    assert_eq!(ports, served, "containerPorts vs node.toml's listeners");
    for listener in [config.listen.peer, config.listen.desk, config.console.listen, config.metrics.listen] {
        assert!(
            listener.ip().is_unspecified(),
            "{listener}: in a pod a listener must take the pod's address"
        );
    }

    for (probe, path) in
        [("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")]
    {
        let at = lines
            .iter()
            .position(|l| l.trim() == format!("{probe}:"))
            .unwrap_or_else(|| panic!("no {probe}"));
        assert_eq!(next_value(&lines, at, "path"), path, "{probe}");
        assert_eq!(next_value(&lines, at, "port"), "metrics", "{probe}");
    }

    // The mounts: the claim at data_dir, and the one read-only directory of node.toml's files.
    let claim =
        next_value(&lines, lines.iter().position(|l| l.trim() == "volumeClaimTemplates:").unwrap(), "name");
    let mounts: BTreeMap<&str, &str> = items(&lines, "volumeMounts")
        .iter()
        .map(|item| {
            (
                item.iter().find_map(|l| value(l, "name")).unwrap(),
                item.iter().find_map(|l| value(l, "mountPath")).unwrap(),
            )
        })
        .collect();
    assert_eq!(Path::new(mounts[claim]), config.data_dir);
    let etc = Path::new(mounts["etc"]);
    for file in [&config.tls.cert, &config.tls.key, &config.tls.desk_cert, &config.directory.file] {
        assert_eq!(file.parent(), Some(etc), "{} is not in the mounted {}", file.display(), etc.display());
    }
    assert_eq!(node_toml.file_name(), Path::new("/etc/hanoi247/node.toml").file_name());
    assert!(statefulset.contains(&format!("\"--config\", \"{}/node.toml\"", etc.display())));
    // The files projected there are the RUNBOOK's install list, no more, no less.
    let projected: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| value(l, "path"))
        .filter(|p| !p.starts_with('/'))
        .map(str::to_owned)
        .collect();
    let installed: BTreeSet<String> = runbook_install_list().into_iter().map(|(f, _)| f).collect();
    let mut with_config = projected.clone();
    with_config.insert("node.toml".into());
    assert_eq!(with_config.len(), projected.len(), "node.toml is projected from the ConfigMap");
    assert_eq!(projected, installed, "the projected files vs the RUNBOOK's install list");
    for hardening in [
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
        "allowPrivilegeEscalation: false",
        "drop: [\"ALL\"]",
        "type: RuntimeDefault",
        "replicas: 1",
    ] {
        assert!(statefulset.contains(hardening), "statefulset.yaml lacks {hardening}");
    }

    // NetworkPolicy: the rules that admit anyone (no `from`) open the peer port and nothing else.
    let policy = manifest("networkpolicy.yaml");
    let policy_lines: Vec<&str> = policy.lines().collect();
    let rules = items(&policy_lines, "ingress");
    assert_eq!(rules.len(), 3, "{rules:?}");
    let rule_ports = |rule: &[&str]| -> BTreeSet<u16> {
        rule.iter().filter_map(|l| value(l, "port")).map(|p| p.parse().unwrap()).collect()
    };
    let open: BTreeSet<u16> = rules
        .iter()
        .filter(|r| !r.iter().any(|l| l.trim() == "- from:" || l.trim() == "from:"))
        .flat_map(|r| rule_ports(r))
        .collect();
    assert_eq!(open, BTreeSet::from([config.listen.peer.port()]));
    let all: BTreeSet<u16> = rules.iter().flat_map(|r| rule_ports(r)).collect();
    assert_eq!(all, served.values().copied().collect(), "every listener has its rule");

    // Services: the LoadBalancer publishes the peer port only.
    let services = manifest("service.yaml");
    let published: Vec<&str> =
        services.split("\n---\n").filter(|doc| doc.contains("type: LoadBalancer")).collect();
    assert_eq!(published.len(), 1);
    let lb_lines: Vec<&str> = published[0].lines().collect();
    let lb_ports: Vec<(&str, &str)> = items(&lb_lines, "ports")
        .iter()
        .map(|p| {
            (
                p.iter().find_map(|l| value(l, "port")).unwrap(),
                p.iter().find_map(|l| value(l, "targetPort")).unwrap(),
            )
        })
        .collect();
    assert_eq!(lb_ports, [(config.listen.peer.port().to_string().as_str(), "peer")]);
}

#[test]
fn the_line_reader_reads_what_the_manifests_hold() {
    let text = "a:\n  b: |\n    x = 1\n\n    [y]\n  c: 2\nports:\n  - name: peer\n    containerPort: 7\n  - name: desk\n    containerPort: 8\nnext: 1\n";
    assert_eq!(block_scalar(text, "b"), "x = 1\n\n[y]\n");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(container_ports(&lines), BTreeMap::from([("desk".into(), 8), ("peer".into(), 7)]));
    assert_eq!(items(&lines, "ports").len(), 2);
    assert_eq!(value("  - port: \"7247\"", "port"), Some("7247"));
    assert_eq!(value("  portal: 1", "port"), None);
}

/// The ConfigMap's node.toml for a node of a test network: its files in `etc`, its store in
/// `data`, loopback addresses on the ports init planned, and init's secretariat key.
fn kubernetes_node_toml(net: &Network, node: &str, etc: &Path, data: &Path) -> String {
    let init = std::fs::read_to_string(net.config_path(node)).unwrap();
    let key_line = init.lines().find(|l| l.starts_with("public_key")).unwrap();
    let plan = net.plans.iter().find(|p| p.code == code(node)).unwrap();
    let mut text = block_scalar(&manifest("configmap.yaml"), "node.toml")
        .replace("code = \"FR\"", &format!("code = \"{node}\""))
        .replace("/etc/hanoi247/", &format!("{}/", etc.display()))
        .replace("\"/var/lib/hanoi247\"", &format!("{:?}", data));
    for (from, port) in
        [(7247, plan.peer_port), (7248, plan.desk_port), (7249, plan.console_port), (9247, plan.metrics_port)]
    {
        text = text.replace(&format!("\"0.0.0.0:{from}\""), &format!("\"127.0.0.1:{port}\""));
    }
    text.lines()
        .map(|l| if l.starts_with("public_key") { key_line } else { l })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_from_the_kubernetes_config_answers_the_probes() {
    let net = Network::named(&["FR", "VN"], "hanoi247").await;
    let node_dir = net.config_path("FR").parent().unwrap().to_owned();
    let network_dir = node_dir.parent().unwrap().to_owned();
    let etc = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    for (name, _) in runbook_install_list() {
        let from: PathBuf =
            [node_dir.join(&name), network_dir.join(&name)].into_iter().find(|p| p.exists()).unwrap();
        std::fs::copy(&from, etc.path().join(&name)).unwrap();
    }
    let config = etc.path().join("node.toml");
    std::fs::write(&config, kubernetes_node_toml(&net, "FR", etc.path(), &state.path().join("data")))
        .unwrap();
    let metrics = NodeConfig::load(&config).unwrap().metrics.listen.port();

    let node = crate::install_list::spawn_until_ready(&config, &etc.path().join("node.log"), metrics).await;
    // The paths the StatefulSet's probes ask for, and a path it does not: a misspelt probe
    // would get this 404 and restart the pod for ever.
    let statefulset = manifest("statefulset.yaml");
    let lines: Vec<&str> = statefulset.lines().collect();
    let paths: BTreeSet<String> = lines
        .iter()
        .filter_map(|l| value(l, "path"))
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect();
    assert_eq!(paths, BTreeSet::from(["/healthz".to_owned(), "/readyz".to_owned()]));
    for path in paths {
        let asked = path.clone();
        let (status, body) = tokio::task::spawn_blocking(move || http_get(metrics, &asked)).await.unwrap();
        assert_eq!(status, 200, "{path}: {body}");
    }
    assert_eq!(tokio::task::spawn_blocking(move || http_get(metrics, "/ready")).await.unwrap().0, 404);
    assert!(node.terminate().await.success());
}
