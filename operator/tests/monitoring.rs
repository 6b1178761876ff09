//! The alerts and dashboards the chart ships, checked with the real `promtool` (Debian's
//! `prometheus` package; scripts/test.sh installs it):
//! - `promtool check rules` with every linter fatal, and `promtool test rules` on the unit
//!   tests beside the rules;
//! - every alert has a severity, a summary, a description, a runbook entry in
//!   docs/runbooks.md that its `runbook_url` points at, and unit tests where it fires and
//!   where it does not; every runbook entry belongs to an alert;
//! - every dashboard panel has queries, and each query is valid PromQL (checked by promtool as
//!   a recording rule, with Grafana's variables filled in).
//!
//! Whether the queries return data from the real processes is the job of the Prometheus
//! integration test.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize;
use serde_json::Value;

const RULES: &str = "charts/paysys/files/prometheus/alerts.yaml";
const RULE_TESTS: &str = "charts/paysys/files/prometheus/alerts_test.yaml";
const RUNBOOKS: &str = "docs/runbooks.md";
const DASHBOARDS: &str = "charts/paysys/files/dashboards";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ sits in the workspace")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

fn yaml(relative: &str) -> Value {
    let text = read(relative);
    let document = serde_norway::Deserializer::from_str(&text)
        .next()
        .unwrap_or_else(|| panic!("{relative} is empty"));
    Value::deserialize(document).unwrap_or_else(|error| panic!("{relative}: {error}"))
}

/// Runs promtool in the workspace root and fails with its output unless it succeeds.
fn promtool(args: &[&str]) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "cannot run promtool ({error}): the monitoring tests need it \
                 (Debian: apt-get install prometheus; scripts/test.sh installs it)"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// Every alerting rule of the rules file.
fn alerts() -> Vec<Value> {
    yaml(RULES)["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("rules").clone())
        .filter(|rule| rule.get("alert").is_some())
        .collect()
}

fn name(alert: &Value) -> &str {
    alert["alert"].as_str().expect("alert name")
}

#[test]
fn the_rules_pass_promtool_check_with_every_linter_and_their_unit_tests() {
    let checked = promtool(&["check", "rules", "--lint=all", "--lint-fatal", RULES]);
    assert!(!checked.contains("WARNING"), "{checked}");
    promtool(&["test", "rules", RULE_TESTS]);
}

#[test]
fn every_alert_is_documented_and_links_its_runbook_entry() {
    let runbooks = read(RUNBOOKS);
    let headings: BTreeSet<&str> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .collect();
    let mut names = BTreeSet::new();
    for alert in alerts() {
        let name = name(&alert);
        names.insert(name.to_string());
        let severity = alert["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning")),
            "{name}: severity critical or warning, not {severity:?}"
        );
        for annotation in ["summary", "description"] {
            assert!(
                alert["annotations"][annotation]
                    .as_str()
                    .is_some_and(|text| !text.trim().is_empty()),
                "{name} has no {annotation}"
            );
        }
        let url = alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no runbook_url"));
        assert!(
            url.ends_with(&format!("/{RUNBOOKS}#{}", name.to_lowercase())),
            "{name}'s runbook_url points at its own entry of {RUNBOOKS}: {url}"
        );
        assert!(headings.contains(name), "{RUNBOOKS} has no '## {name}'");
    }
    let stale: Vec<_> = headings
        .iter()
        .filter(|heading| !names.contains(**heading))
        .collect();
    assert!(stale.is_empty(), "runbook entries of no alert: {stale:?}");
}

#[test]
fn every_alert_has_a_unit_test_where_it_fires_and_one_where_it_does_not() {
    let tests = yaml(RULE_TESTS);
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for case in tests["tests"].as_array().expect("tests") {
        for eval in case["alert_rule_test"].as_array().into_iter().flatten() {
            let alert = eval["alertname"].as_str().expect("alertname").to_string();
            let expected = eval["exp_alerts"].as_array().map_or(0, Vec::len);
            if expected == 0 {
                quiet.insert(alert);
            } else {
                fires.insert(alert);
            }
        }
    }
    for alert in alerts() {
        let name = name(&alert);
        assert!(fires.contains(name), "no unit test where {name} fires");
        assert!(
            quiet.contains(name),
            "no unit test where {name} stays quiet"
        );
    }
}

/// Each dashboard with its panels' queries.
fn dashboard_queries() -> Vec<(String, String, Vec<String>)> {
    let mut dashboards = Vec::new();
    for entry in std::fs::read_dir(root().join(DASHBOARDS)).expect("dashboards folder") {
        let path = entry.expect("dashboard file").path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|error| panic!("{file}: {error}"));
        for panel in dashboard["panels"].as_array().expect("panels") {
            let title = panel["title"].as_str().expect("panel title").to_string();
            let queries: Vec<String> = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|target| target["expr"].as_str().map(str::to_string))
                .collect();
            dashboards.push((file.clone(), title, queries));
        }
    }
    dashboards
}

#[test]
fn every_dashboard_panel_has_valid_promql() {
    let panels = dashboard_queries();
    assert!(
        panels.len() >= 10,
        "the payment flow and operator dashboards"
    );
    // Grafana fills these in; promtool must see a complete expression.
    let fill = |query: &str| {
        query
            .replace("$__rate_interval", "5m")
            .replace("$namespace", ".*")
            .replace("$paymentsystem", ".*")
    };
    let mut rules = Vec::new();
    for (file, title, queries) in &panels {
        assert!(!queries.is_empty(), "{file}: panel {title:?} has no query");
        for query in queries {
            assert!(
                !query.contains('$') || query.contains("$__") || query.contains("=~\"$"),
                "{file}: panel {title:?} uses an unknown variable: {query}"
            );
            rules.push(serde_json::json!({
                "record": format!("dashboard:panel:{}", rules.len()),
                "expr": fill(query),
            }));
        }
    }
    let document = serde_json::json!({"groups": [{"name": "dashboards", "rules": rules}]});
    // JSON is YAML: promtool reads it as a rules file.
    let file = std::env::temp_dir().join(format!("paysys-dashboards-{}.json", std::process::id()));
    std::fs::write(&file, serde_json::to_vec(&document).unwrap()).unwrap();
    let checked =
        std::panic::catch_unwind(|| promtool(&["check", "rules", file.to_str().unwrap()]));
    std::fs::remove_file(&file).ok();
    if let Err(failure) = checked {
        std::panic::resume_unwind(failure);
    }
}
