//! CPU time and memory of processes from `/proc`, to charge each process its CPU per quote.

use std::collections::BTreeMap;

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ; 100 on Linux).
const HZ: f64 = 100.0;

/// CPU seconds (user + system, all threads) used so far by `pid`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// CPU seconds used by the children of `pid` that have exited and been waited for. For the
/// Postgres server these are its finished autovacuum workers and closed connections, which no
/// snapshot of live processes sees.
pub fn exited_children_cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat_seconds(&stat, 13)
}

/// User + system CPU seconds from a `stat` file of a process or a thread.
fn cpu_seconds_of(path: &str) -> Option<f64> {
    stat_seconds(&std::fs::read_to_string(path).ok()?, 11)
}

/// The sum of the two tick counts at `first` and `first + 1` of the fields after the command
/// name (utime and stime at 11, fields 14 and 15 of `stat`; cutime and cstime at 13), in seconds.
fn stat_seconds(stat: &str, first: usize) -> Option<f64> {
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let user: f64 = fields.get(first)?.parse().ok()?;
    let system: f64 = fields.get(first + 1)?.parse().ok()?;
    Some((user + system) / HZ)
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

/// The whole machine's CPU time so far, in jiffies (`/proc/stat`, first line).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MachineJiffies {
    /// Time this machine's processes and kernel ran (not idle, waiting for I/O or stolen).
    pub busy: u64,
    /// Time the hypervisor gave this machine's CPUs to other guests while they had work.
    pub steal: u64,
    pub total: u64,
}

/// The machine's jiffies now.
pub fn machine_jiffies() -> MachineJiffies {
    parse_machine(&std::fs::read_to_string("/proc/stat").unwrap_or_default())
}

/// Reads the `cpu` line: user nice system idle iowait irq softirq steal guest guest_nice
/// (guest time is already counted in user time, so it is left out of the total).
fn parse_machine(stat: &str) -> MachineJiffies {
    let fields: Vec<u64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|f| f.parse().ok()).collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(field).sum();
    let (idle, steal) = (field(3) + field(4), field(7));
    MachineJiffies { busy: total - idle - steal, steal, total }
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
    pub machine: MachineJiffies,
}

/// What happened on the machine between two snapshots.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// CPU-seconds of each process group.
    pub groups: BTreeMap<String, f64>,
    /// Share of the machine's CPU time busy (0–1).
    pub busy_share: f64,
    /// Share of the machine's CPU time stolen by the hypervisor (0–1).
    pub steal_share: f64,
    /// Seconds between the snapshots.
    pub wall: f64,
}

/// CPU used per group between two snapshots, and the machine's busy and stolen shares.
pub fn delta(a: &Snapshot, b: &Snapshot) -> Usage {
    let mut groups = BTreeMap::new();
    for (name, after) in &b.groups {
        let before = a.groups.get(name).copied().unwrap_or(0.0);
        groups.insert(name.clone(), (after - before).max(0.0));
    }
    let total = b.machine.total.saturating_sub(a.machine.total).max(1) as f64;
    Usage {
        groups,
        busy_share: b.machine.busy.saturating_sub(a.machine.busy) as f64 / total,
        steal_share: b.machine.steal.saturating_sub(a.machine.steal) as f64 / total,
        wall: b.at.duration_since(a.at).as_secs_f64(),
    }
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

    #[test]
    fn own_and_exited_childrens_ticks_are_told_apart() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
        // utime stime cutime cstime …; a command name may hold spaces and parentheses.
        let stat = "2233 (postgres (x) y) S 1 2233 2233 0 -1 4194304 57592 7640212 1 136 17 354 61666 25698 20 0";
        assert_eq!(stat_seconds(stat, 11), Some(3.71));
        assert_eq!(stat_seconds(stat, 13), Some(873.64));
        assert_eq!(stat_seconds("2233 (postgres) S 1 2", 13), None);
        let me = std::process::id();
        let before = exited_children_cpu_seconds(me).unwrap();
        let spin = "i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done";
        std::process::Command::new("sh").args(["-c", spin]).status().unwrap();
        let after = exited_children_cpu_seconds(me).unwrap();
        assert!(after - before >= 0.05, "a waited-for child's CPU: {before} → {after} s");
    }

    #[test]
    fn stolen_time_is_neither_busy_nor_idle() {
        // user nice system idle iowait irq softirq steal guest guest_nice
        let m = parse_machine("cpu  100 5 50 400 20 0 10 30 7 0\ncpu0 1 2 3\n");
        assert_eq!(m, MachineJiffies { busy: 165, steal: 30, total: 615 });
        let at = std::time::Instant::now();
        let snap = |machine| Snapshot { at, groups: BTreeMap::new(), machine };
        let later = MachineJiffies { busy: 165 + 60, steal: 30 + 20, total: 615 + 100 };
        let usage = delta(&snap(m), &snap(later));
        assert_eq!((usage.busy_share, usage.steal_share), (0.6, 0.2));
    }
}
