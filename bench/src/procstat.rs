//! CPU time and memory of processes from `/proc`, to charge each process its CPU per quote.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on Linux).
const HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// User + system CPU seconds from a `stat` file of a process or a thread.
fn cpu_seconds_of(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / HZ)
}

/// CPU seconds used so far by the threads of `pid` whose name starts with `prefix` (e.g. the
/// JVM's "C2 CompilerThre…").
pub fn thread_cpu_seconds(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return 0.0 };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|tid| cpu_seconds_of(&format!("/proc/{pid}/task/{tid}/stat")))
        .sum()
}

/// Resident set size of `pid` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, first line).
pub fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// Postgres server processes grouped: backends of the given databases by database, and the
/// rest (shared: WAL writer, checkpointer, other databases' backends) as `postgres (other)`.
pub fn postgres_groups(databases: &[(&str, &str)]) -> BTreeMap<String, Vec<u32>> {
    let mut groups: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return groups };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else { continue };
        let cmd = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmd.starts_with("postgres") && !cmd.contains("bin/postgres") {
            continue;
        }
        let group = databases
            .iter()
            .find(|(db, _)| cmd.contains(&format!(" {db} ")))
            .map_or_else(|| "postgres (other)".to_string(), |(_, label)| label.to_string());
        groups.entry(group).or_default().push(pid);
    }
    groups
}

/// The pids of processes whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
        })
        .collect()
}

/// A CPU snapshot of named process groups and of the machine.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: std::time::Instant,
    pub groups: BTreeMap<String, f64>,
    pub machine: (u64, u64),
}

/// CPU used per group between two snapshots, in CPU-seconds, plus the machine's busy share.
pub fn delta(a: &Snapshot, b: &Snapshot) -> (BTreeMap<String, f64>, f64, f64) {
    let mut out = BTreeMap::new();
    for (name, after) in &b.groups {
        let before = a.groups.get(name).copied().unwrap_or(0.0);
        out.insert(name.clone(), (after - before).max(0.0));
    }
    let busy = (b.machine.0 - a.machine.0) as f64;
    let total = (b.machine.1 - a.machine.1).max(1) as f64;
    let wall = b.at.duration_since(a.at).as_secs_f64();
    (out, busy / total, wall)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_threads_cpu_is_counted_by_its_name() {
        let busy = std::thread::Builder::new()
            .name("procstat-spin".into())
            .spawn(|| {
                let until = std::time::Instant::now() + std::time::Duration::from_millis(300);
                let mut n = 0u64;
                while std::time::Instant::now() < until {
                    n = n.wrapping_add(1);
                }
                n
            })
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(250));
        let me = std::process::id();
        let spun = thread_cpu_seconds(me, "procstat-spin");
        busy.join().unwrap();
        assert!(spun >= 0.05, "the spinning thread's CPU: {spun} s");
        assert_eq!(thread_cpu_seconds(me, "no-such-thread"), 0.0);
        assert!(cpu_seconds(me).unwrap() >= spun, "the process counts all its threads");
    }
}
