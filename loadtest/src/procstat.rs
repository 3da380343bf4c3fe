//! Server-side figures from `/proc`: resident memory (`VmRSS`), proportional memory (`Pss` from
//! `smaps_rollup`, which splits pages shared between e.g. nginx's master and worker), open file
//! descriptors and CPU time, summed over the server PIDs given with `--pid`; and the tool's own CPU
//! time from `getrusage`.

use serde::{Deserialize, Serialize};

/// One sample of the server processes, summed over their PIDs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcSample {
    /// Sum of `VmRSS`, bytes.
    pub rss_bytes: u64,
    /// Sum of `Pss`, bytes.
    pub pss_bytes: u64,
    /// Open file descriptors.
    pub fds: u64,
    /// User + system CPU time, seconds.
    pub cpu_s: f64,
}

/// Samples every pid; an error names the pid and file that could not be read.
pub fn sample(pids: &[u32]) -> Result<ProcSample, String> {
    let mut total = ProcSample::default();
    for &pid in pids {
        total.rss_bytes += kb_field(&format!("/proc/{pid}/status"), "VmRSS:")? * 1024;
        total.pss_bytes += kb_field(&format!("/proc/{pid}/smaps_rollup"), "Pss:")? * 1024;
        total.fds += count_fds(pid)?;
        total.cpu_s += cpu_seconds(pid)?;
    }
    Ok(total)
}

/// Samples when pids were given; `None` otherwise or when reading failed (the error is printed).
pub fn try_sample(pids: &[u32]) -> Option<ProcSample> {
    if pids.is_empty() {
        return None;
    }
    match sample(pids) {
        Ok(sample) => Some(sample),
        Err(err) => {
            eprintln!("loadtest: cannot sample the server processes: {err}");
            None
        }
    }
}

/// CPU seconds (user + system, all threads) of each pid, in order; `None` when `pids` is empty or
/// one could not be read (the error is printed).
pub fn try_cpu_each(pids: &[u32]) -> Option<Vec<f64>> {
    if pids.is_empty() {
        return None;
    }
    match pids.iter().map(|&pid| cpu_seconds(pid)).collect() {
        Ok(each) => Some(each),
        Err(err) => {
            eprintln!("loadtest: cannot read the CPU time of a process: {err}");
            None
        }
    }
}

fn kb_field(path: &str, key: &str) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse::<u64>().ok())
        .ok_or_else(|| format!("{path}: no {key} line"))
}

fn count_fds(pid: u32) -> Result<u64, String> {
    let path = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&path).map_err(|e| format!("{path}: {e}"))?;
    Ok(entries.count() as u64)
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no memory effects.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    // Fields after the command name (which may hold spaces and parentheses): state is field 3,
    // utime field 14 and stime field 15, i.e. indexes 11 and 12 after the closing parenthesis.
    let after = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| format!("{path}: unexpected format"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let parse = |i: usize| -> Result<f64, String> {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .map(|v| v as f64)
            .ok_or_else(|| format!("{path}: no field {i}"))
    };
    Ok((parse(11)? + parse(12)?) / clock_ticks())
}

/// CPU time (user + system) used by this process so far, seconds.
pub fn own_cpu_seconds() -> f64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises the soft open-file limit to the hard one; returns the soft limit now in force.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid struct.
    unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_this_process() {
        let me = std::process::id();
        let own = sample(&[me]).expect("own /proc entries are readable");
        assert!(own.rss_bytes > 0);
        assert!(own.pss_bytes > 0);
        assert!(own.fds >= 3);
        assert!(own.cpu_s >= 0.0);
        assert!(sample(&[u32::MAX]).is_err());
        let each = try_cpu_each(&[me, me]).expect("own CPU time");
        assert_eq!(each.len(), 2);
        assert!(each[0] >= 0.0 && each[1] >= each[0]);
        assert_eq!(try_cpu_each(&[]), None);
    }
}
