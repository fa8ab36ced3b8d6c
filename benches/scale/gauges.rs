//! What the bench reads from outside the operator: the process's CPU time and memory from
//! `/proc`, the API server's request counters from its own `/metrics`, the mock's call log.

use kube::Client;
use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system, all threads) the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat has a command name")
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name and state.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / TICKS_PER_SECOND
}

/// `(VmRSS, VmHWM)` of the process in MiB: resident now, and the peak so far.
pub fn rss_mib(pid: u32) -> (f64, f64) {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Requests the API server has served so far that change something, by `resource[/sub]`, from
/// its `apiserver_request_total` counter.
#[derive(Clone, Debug, Default)]
pub struct Writes(BTreeMap<String, f64>);

impl Writes {
    pub async fn read(client: &Client) -> Writes {
        let request = http::Request::get("/metrics").body(Vec::new()).unwrap();
        let text = client.request_text(request).await.expect("GET /metrics");
        let mut counts = BTreeMap::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_string())
                    .unwrap_or_default()
            };
            let verb = label("verb");
            if matches!(
                verb.as_str(),
                "GET" | "LIST" | "WATCH" | "WATCHLIST" | "CONNECT"
            ) {
                continue;
            }
            // The API server's own bookkeeping (the `kubernetes` Service's endpoints, every
            // 10 s), not anyone's request.
            if label("resource") == "endpoints" {
                continue;
            }
            let resource = match label("subresource").as_str() {
                "" => label("resource"),
                sub => format!("{}/{sub}", label("resource")),
            };
            *counts.entry(resource).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
        }
        Writes(counts)
    }

    /// What was written between `earlier` and `self`.
    pub fn since(&self, earlier: &Writes) -> Writes {
        let mut delta = self.0.clone();
        for (resource, count) in &earlier.0 {
            *delta.entry(resource.clone()).or_insert(0.0) -= count;
        }
        delta.retain(|_, count| *count > 0.0);
        Writes(delta)
    }

    /// The same without `count` writes to `resource` (the bench's own).
    pub fn minus(mut self, resource: &str, count: f64) -> Writes {
        if let Some(c) = self.0.get_mut(resource) {
            *c -= count;
        }
        self.0.retain(|_, c| *c > 0.0);
        self
    }

    /// Writes to events.
    pub fn events(&self) -> f64 {
        self.0.get("events").copied().unwrap_or(0.0)
    }

    /// Writes to anything but events.
    pub fn objects(&self) -> f64 {
        self.0
            .iter()
            .filter(|(r, _)| *r != "events")
            .map(|(_, c)| c)
            // An empty f64 sum is -0.0, printed "-0".
            .fold(0.0, |sum, c| sum + c)
    }

    /// `resource: count` pairs, for the detail lines.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = self.0.iter().map(|(r, c)| format!("{r} {c}")).collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}
