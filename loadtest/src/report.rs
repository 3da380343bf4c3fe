//! Reports: the JSON document of one run (`--json`, `--out`), its human-readable form, and
//! `summarize`, which reads many reports (the comparison's `results/` folder) and prints a markdown
//! table of medians with the ratio of one server to another per figure.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One run's report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always `herald-loadtest`.
    pub tool: String,
    /// `idle`, `fanout`, `publish` or `churn`.
    pub scenario: String,
    /// Free text naming the configuration (`--label`), e.g. `fanout-sse-10k`.
    pub label: String,
    /// Which server was measured (`--server`), e.g. `herald` or `nchan`.
    pub server: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix_s: u64,
    /// Wall time of the run, seconds.
    pub duration_s: f64,
    /// The run's parameters.
    pub params: serde_json::Value,
    /// The headline numbers (what `summarize` compares).
    pub figures: BTreeMap<String, f64>,
    /// Everything else measured.
    pub details: serde_json::Value,
}

/// Whether a larger value of `figure` is better (`Some(true)`), worse (`Some(false)`) or neither.
pub fn higher_is_better(figure: &str) -> Option<bool> {
    if figure.ends_with("_per_s") || figure.ends_with("_per_server_cpu_s") || figure == "connected"
    {
        Some(true)
    } else if figure.contains("latency")
        || figure.starts_with("request_p")
        || figure.starts_with("request_max")
        || figure.ends_with("_per_sub_bytes")
        || figure.ends_with("growth_bytes")
        || figure.ends_with("growth")
        || figure == "lost"
        || figure == "duplicated"
        || figure == "failed"
        || figure == "publish_failed"
        || figure == "server_cpu_s"
    {
        Some(false)
    } else {
        None
    }
}

/// Formats a figure value for people.
pub fn fmt_value(value: f64) -> String {
    if !value.is_finite() {
        return "–".into();
    }
    let abs = value.abs();
    if abs >= 100_000.0 {
        group_thousands(value.round() as i64)
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else if value == value.trunc() {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn group_thousands(value: i64) -> String {
    let digits = value.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if value < 0 {
        format!("-{out}")
    } else {
        out
    }
}

/// Prints `report` for people.
pub fn print_human(report: &Report) {
    println!(
        "{} {}{}: {:.1} s",
        report.scenario,
        if report.label.is_empty() {
            String::new()
        } else {
            format!("[{}] ", report.label)
        },
        if report.server.is_empty() {
            String::new()
        } else {
            format!("against {}", report.server)
        },
        report.duration_s
    );
    let width = report.figures.keys().map(|k| k.len()).max().unwrap_or(0);
    for (name, value) in &report.figures {
        println!("  {name:width$}  {}", fmt_value(*value));
    }
    if let Some(errors) = report.details.get("errors").and_then(|e| e.as_object()) {
        if !errors.is_empty() {
            println!("  errors:");
            for (kind, count) in errors {
                println!("    {kind}: {count}");
            }
        }
    }
}

/// Median of `values` (mean of the two middle ones for an even count).
pub fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// Which figures the comparison table shows for a scenario, in order.
fn table_figures(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "idle" => &[
            "connected",
            "rss_per_sub_bytes",
            "pss_per_sub_bytes",
            "rss_after_mb",
        ],
        "fanout" => &[
            "deliveries_per_s",
            "deliveries_per_server_cpu_s",
            "publishes_per_s",
            "latency_p50_ms",
            "latency_p99_ms",
            "latency_max_ms",
            "lost",
            "duplicated",
            "client_cpu_s",
        ],
        "publish" => &[
            "requests_per_s",
            "requests_per_server_cpu_s",
            "request_p50_ms",
            "request_p99_ms",
            "publish_failed",
            "lost",
            "duplicated",
        ],
        "churn" => &[
            "connected",
            "received",
            "rss_growth_bytes",
            "fds_growth",
            "server_subscribers_after",
        ],
        _ => &[],
    }
}

/// The figures of each run, by server name.
type RunsByServer = BTreeMap<String, Vec<BTreeMap<String, f64>>>;

/// The `*.json` reports in `dir`, in name order.
fn json_reports(dir: &Path) -> Result<Vec<std::path::PathBuf>, String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Reads every `*.json` report in `dir` and renders the comparison table of `subject` against
/// `baseline` (server names) as markdown.
pub fn summarize(dir: &Path, subject: &str, baseline: &str) -> Result<String, String> {
    let files = json_reports(dir)?;
    // label -> (scenario, server -> runs' figures)
    let mut order: Vec<String> = Vec::new();
    let mut runs: BTreeMap<String, (String, RunsByServer)> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Ok(report) = serde_json::from_str::<Report>(&text) else {
            continue;
        };
        if !order.contains(&report.label) {
            order.push(report.label.clone());
        }
        let entry = runs
            .entry(report.label.clone())
            .or_insert_with(|| (report.scenario.clone(), BTreeMap::new()));
        entry
            .1
            .entry(report.server.clone())
            .or_default()
            .push(report.figures);
    }
    if order.is_empty() {
        return Err(format!("no reports in {}", dir.display()));
    }
    let mut out = String::new();
    out.push_str(&format!(
        "| Scenario | Figure | {subject} | {baseline} | {subject}/{baseline} | Better |\n|---|---|---:|---:|---:|---|\n"
    ));
    for label in &order {
        let Some((scenario, servers)) = runs.get(label) else {
            continue;
        };
        let empty = Vec::new();
        let ours = servers.get(subject).unwrap_or(&empty);
        let theirs = servers.get(baseline).unwrap_or(&empty);
        let mut figures: Vec<&str> = table_figures(scenario).to_vec();
        if figures.is_empty() {
            if let Some(first) = ours.first().or(theirs.first()) {
                figures = first.keys().map(|k| k.as_str()).collect();
            }
        }
        for figure in figures {
            let pick = |runs: &Vec<BTreeMap<String, f64>>| {
                let mut values: Vec<f64> =
                    runs.iter().filter_map(|f| f.get(figure).copied()).collect();
                median(&mut values)
            };
            let (a, b) = (pick(ours), pick(theirs));
            if a.is_none() && b.is_none() {
                continue;
            }
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => format!("{:.2}", a / b),
                (Some(a), Some(b)) if a == b => "=".into(),
                _ => "–".into(),
            };
            let better = match higher_is_better(figure) {
                Some(true) => "higher",
                Some(false) => "lower",
                None => "",
            };
            out.push_str(&format!(
                "| {label} (n={}/{}) | {figure} | {} | {} | {ratio} | {better} |\n",
                ours.len(),
                theirs.len(),
                a.map(fmt_value).unwrap_or_else(|| "–".into()),
                b.map(fmt_value).unwrap_or_else(|| "–".into()),
            ));
        }
    }
    Ok(out)
}

/// Reads the `fanout --nodes` reports (those with a `nodes` figure) in `dir` and renders one
/// markdown row per node count: medians over the runs of deliveries/s in all and per node, the CPU
/// seconds of the Herald processes (`--pid`) and of Redis (`--redis-pid`), deliveries per CPU
/// second of both (of Herald alone without `--redis-pid`), p99 latency, lost and duplicated
/// messages (with the worst run when it differs from the median).
pub fn summarize_nodes(dir: &Path) -> Result<String, String> {
    let files = json_reports(dir)?;
    let mut by_nodes: BTreeMap<u64, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for path in &files {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let Ok(report) = serde_json::from_str::<Report>(&text) else {
            continue;
        };
        let Some(nodes) = report.figures.get("nodes").copied() else {
            continue;
        };
        if report.scenario == "fanout" && nodes >= 1.0 {
            by_nodes
                .entry(nodes as u64)
                .or_default()
                .push(report.figures);
        }
    }
    if by_nodes.is_empty() {
        return Err(format!("no fanout --nodes reports in {}", dir.display()));
    }
    let mut out = String::from(
        "| Nodes | Runs | Deliveries/s total | Per node (mean) | Per node (each) | Herald CPU s | Redis CPU s | Deliveries per CPU s (Herald+Redis) | p99 ms | Lost | Dup |\n\
         |---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|\n",
    );
    for (nodes, runs) in &by_nodes {
        let pick = |figure: &str| {
            let mut values: Vec<f64> = runs.iter().filter_map(|f| f.get(figure).copied()).collect();
            median(&mut values)
        };
        let worst = |figure: &str| {
            runs.iter()
                .filter_map(|f| f.get(figure).copied())
                .fold(None, |acc: Option<f64>, v| {
                    Some(acc.map_or(v, |a| a.max(v)))
                })
        };
        // Rates with thousands grouped from 1,000 up, so the columns read alike.
        let fmt = |v: f64| {
            if v.is_finite() && v.abs() >= 1000.0 {
                group_thousands(v.round() as i64)
            } else {
                fmt_value(v)
            }
        };
        let show = |value: Option<f64>| value.map(fmt).unwrap_or_else(|| "–".into());
        let count = |figure: &str| {
            let (m, w) = (pick(figure), worst(figure));
            match (m, w) {
                (Some(m), Some(w)) if w > m => format!("{} (max {})", fmt(m), fmt(w)),
                _ => show(m),
            }
        };
        let each: Vec<String> = (0..*nodes)
            .map(|k| show(pick(&format!("node{k}_deliveries_per_s"))))
            .collect();
        out.push_str(&format!(
            "| {nodes} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            runs.len(),
            show(pick("deliveries_per_s")),
            show(pick("deliveries_per_s_per_node")),
            each.join(" / "),
            show(pick("server_cpu_s")),
            show(pick("redis_cpu_s")),
            show(pick("deliveries_per_total_cpu_s").or(pick("deliveries_per_server_cpu_s"))),
            show(pick("latency_p99_ms")),
            count("lost"),
            count("duplicated"),
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_formats() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(fmt_value(1_234_567.4), "1,234,567");
        assert_eq!(fmt_value(0.375), "0.38");
        assert_eq!(fmt_value(0.0), "0");
        assert_eq!(higher_is_better("deliveries_per_s"), Some(true));
        assert_eq!(higher_is_better("latency_p99_ms"), Some(false));
    }

    #[test]
    fn summarizes_node_runs() {
        let dir = std::env::temp_dir().join(format!("loadtest-nodes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let runs: [(f64, f64, f64); 4] = [
            (1.0, 100.0, 0.0),
            (1.0, 300.0, 0.0),
            (1.0, 200.0, 4.0),
            (2.0, 500.0, 0.0),
        ];
        for (i, (nodes, per_s, lost)) in runs.into_iter().enumerate() {
            let mut figures: BTreeMap<String, f64> = [
                ("nodes".to_string(), nodes),
                ("deliveries_per_s".to_string(), per_s),
                ("deliveries_per_s_per_node".to_string(), per_s / nodes),
                ("lost".to_string(), lost),
                ("duplicated".to_string(), 0.0),
                ("server_cpu_s".to_string(), 1.5),
                ("redis_cpu_s".to_string(), 0.25),
            ]
            .into();
            for k in 0..nodes as usize {
                figures.insert(format!("node{k}_deliveries_per_s"), per_s / nodes);
            }
            let report = Report {
                tool: "herald-loadtest".into(),
                scenario: "fanout".into(),
                label: format!("nodes-{nodes}"),
                server: "herald".into(),
                started_unix_s: 0,
                duration_s: 1.0,
                params: serde_json::Value::Null,
                figures,
                details: serde_json::Value::Null,
            };
            let text = serde_json::to_string(&report).expect("serializable");
            std::fs::write(dir.join(format!("{i}.json")), text).expect("write");
        }
        let table = summarize_nodes(&dir).expect("reports");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            table.contains("| 1 | 3 | 200 | 200 | 200 | 1.50 | 0.25 | – | – | 0 (max 4) | 0 |"),
            "{table}"
        );
        assert!(
            table.contains("| 2 | 1 | 500 | 250 | 250 / 250 | 1.50 | 0.25 |"),
            "{table}"
        );
    }

    #[test]
    fn summarizes_a_folder() {
        let dir = std::env::temp_dir().join(format!("loadtest-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        for (i, (server, value)) in [("herald", 30.0), ("nchan", 10.0), ("herald", 50.0)]
            .into_iter()
            .enumerate()
        {
            let report = Report {
                tool: "herald-loadtest".into(),
                scenario: "fanout".into(),
                label: "fanout-x".into(),
                server: server.into(),
                started_unix_s: 0,
                duration_s: 1.0,
                params: serde_json::Value::Null,
                figures: [("deliveries_per_s".to_string(), value)].into(),
                details: serde_json::Value::Null,
            };
            let text = serde_json::to_string(&report).expect("serializable");
            std::fs::write(dir.join(format!("{i}.json")), text).expect("write");
        }
        let table = summarize(&dir, "herald", "nchan").expect("reports");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(
            table.contains("| fanout-x (n=2/1) | deliveries_per_s | 40.0 | 10.0 | 4.00 | higher |"),
            "{table}"
        );
    }
}
