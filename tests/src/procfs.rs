//! What the suites read about the stack's processes from `/proc`: who runs what, in which
//! process group, and how much memory each holds.

/// One live process.
#[derive(Debug, Clone)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    /// Its process group (the devstack's functions share the devstack's).
    pub pgrp: u32,
    /// Its command line, arguments separated by spaces.
    pub cmdline: String,
}

/// Every live process (zombies left out).
pub fn processes() -> Vec<Process> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid pgrp …; comm may hold spaces and parentheses.
            let rest = stat.get(stat.rfind(')')? + 1..)?;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            if fields.first() == Some(&"Z") {
                return None;
            }
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            Some(Process {
                pid,
                ppid: fields.get(1)?.parse().ok()?,
                pgrp: fields.get(2)?.parse().ok()?,
                cmdline: String::from_utf8_lossy(&cmdline).replace('\0', " "),
            })
        })
        .collect()
}

/// The live processes of process group `pgid`.
pub fn process_group_members(pgid: u32) -> Vec<u32> {
    processes()
        .into_iter()
        .filter(|p| p.pgrp == pgid)
        .map(|p| p.pid)
        .collect()
}

/// Every live process whose command line contains `needle`, with their children.
pub fn processes_with(needle: &str) -> Vec<u32> {
    let all = processes();
    let roots: Vec<u32> = all
        .iter()
        .filter(|p| p.cmdline.contains(needle))
        .map(|p| p.pid)
        .collect();
    let mut out = roots.clone();
    out.extend(
        all.iter()
            .filter(|p| roots.contains(&p.ppid))
            .map(|p| p.pid),
    );
    out.sort_unstable();
    out.dedup();
    out
}

/// A `/proc/<pid>/status` figure in KiB (`VmRSS`, `VmHWM`); 0 when the process is gone.
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Resident memory of a process, in KiB (0 when gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_found_with_its_group_and_memory() {
        let me = std::process::id();
        let all = processes();
        let this = all.iter().find(|p| p.pid == me).expect("this process");
        assert!(process_group_members(this.pgrp).contains(&me));
        assert!(processes_with(&this.cmdline).contains(&me));
        assert!(rss_kib(me) > 0);
        assert!(status_kib(me, "VmHWM") >= rss_kib(me));
        assert_eq!(status_kib(me, "NoSuchField"), 0);
    }
}
