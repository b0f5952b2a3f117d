//! What the load generator reads and reports: the server's CPU time, memory and
//! write syscalls from `/proc`, latency percentiles, and the output table.

use std::time::{SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch: the timestamp carried in each event.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// Clock ticks per second of `/proc/<pid>/stat` (`USER_HZ`, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// A snapshot of a process's counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcSample {
    /// utime + stime, in seconds.
    pub cpu_s: f64,
    /// stime alone (in the kernel: syscalls, the TCP stack), in seconds.
    pub sys_s: f64,
    /// Write syscalls so far (`syscw` of `/proc/<pid>/io`), if readable.
    pub writes: u64,
    /// Resident memory in KiB (`VmRSS`).
    pub rss_kib: u64,
}

/// Reads the counters of `pid` (of every thread: `/proc/<pid>/stat` sums them).
pub fn sample(pid: u32) -> ProcSample {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let cpu_s = (tick(11) + tick(12)) as f64 / TICKS_PER_SECOND;
    let sys_s = tick(12) as f64 / TICKS_PER_SECOND;
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let writes = field(&io, "syscw:");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = field(&status, "VmRSS:");
    ProcSample {
        cpu_s,
        sys_s,
        writes,
        rss_kib,
    }
}

fn field(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// The `p` quantile (0..=1) of sorted values.
pub fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// One result row: named columns, printed as a markdown table and a JSON line.
#[derive(Default)]
pub struct Report {
    columns: Vec<(&'static str, serde_json::Value)>,
}

impl Report {
    /// Adds a column.
    pub fn set(&mut self, name: &'static str, value: impl Into<serde_json::Value>) -> &mut Self {
        self.columns.push((name, value.into()));
        self
    }

    /// Adds a number rounded to `digits` decimals.
    pub fn num(&mut self, name: &'static str, value: f64, digits: i32) -> &mut Self {
        let scale = 10f64.powi(digits);
        self.set(name, (value * scale).round() / scale)
    }

    /// The value of a numeric column.
    pub fn number(&self, name: &str) -> Option<f64> {
        self.columns
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.as_f64())
    }

    /// Prints the table (header, rule, row) and then the JSON line.
    pub fn print(&self) {
        let names: Vec<&str> = self.columns.iter().map(|(n, _)| *n).collect();
        println!("| {} |", names.join(" | "));
        println!("|{}", "---|".repeat(names.len()));
        let values: Vec<String> = self
            .columns
            .iter()
            .map(|(_, v)| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        println!("| {} |", values.join(" | "));
        let object: serde_json::Map<String, serde_json::Value> = self
            .columns
            .iter()
            .map(|(n, v)| ((*n).to_owned(), v.clone()))
            .collect();
        println!("{}", serde_json::Value::Object(object));
    }
}

/// Counts the write-like syscalls (`write`, `writev`, `sendto`, `sendmsg`) of
/// a process with `perf stat` while it runs; `/proc/<pid>/io` misses `send`,
/// which is how Rust's standard library writes to sockets.
pub struct SyscallCount {
    child: Option<std::process::Child>,
}

const WRITE_SYSCALLS: &str = "syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg";

impl SyscallCount {
    /// Starts counting (nothing happens when `perf` is missing or not allowed).
    pub fn start(pid: u32) -> Self {
        let child = std::process::Command::new("perf")
            .args([
                "stat",
                "-x",
                ",",
                "-e",
                WRITE_SYSCALLS,
                "-p",
                &pid.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok();
        // perf needs a moment to attach.
        std::thread::sleep(std::time::Duration::from_millis(300));
        Self { child }
    }

    /// Stops counting; the total, if `perf` could count.
    pub fn finish(self) -> Option<u64> {
        let child = self.child?;
        let _ = std::process::Command::new("kill")
            .args(["-INT", &child.id().to_string()])
            .status();
        let output = child.wait_with_output().ok()?;
        let text = String::from_utf8_lossy(&output.stderr);
        let counts: Vec<u64> = text
            .lines()
            .filter(|line| line.contains("sys_enter_"))
            .filter_map(|line| line.split(',').next()?.parse().ok())
            .collect();
        (!counts.is_empty()).then(|| counts.iter().sum())
    }
}
