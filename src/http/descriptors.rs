//! File descriptors and how many connections they allow. At start the soft open-file limit
//! (`RLIMIT_NOFILE`) is raised to the hard one and `ConnectionCapacity` keeps a reserve of descriptors
//! off what is left, so the accept loop refuses connections past it (503, `/healthz` still answered)
//! before `accept` can fail with `EMFILE`. Should it fail anyway (descriptors taken by something
//! else), `SpareDescriptor` is given up for a moment to accept one waiting client and answer it 503,
//! so that clients get an answer instead of hanging in the listen backlog.

use std::io;
use tokio::net::TcpListener;

/// Descriptors kept back from connections at the smallest limits: refusals being answered (at most
/// `MAX_POLITE_REFUSALS` at once), the spare, Redis and authorization connections, files.
const MIN_RESERVE: u64 = 64;
/// Largest reserve, however high the limit.
const MAX_RESERVE: u64 = 4096;

/// How many connections the open-file limit leaves room for.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionCapacity {
    /// Most connections at once; `None` when the process has no open-file limit.
    connections: Option<u64>,
}

impl ConnectionCapacity {
    /// Raises the soft open-file limit to the hard limit and works out the capacity: the limit less
    /// the descriptors open now and a reserve (64 plus 1/64 of the limit, at most 4096). Logs the
    /// capacity, and warns when `max_connections` is more than it.
    pub fn at_start(max_connections: Option<u64>) -> ConnectionCapacity {
        let Some((before, limit)) = raise_open_file_limit() else {
            tracing::info!("no open-file limit: connections are bounded by max_connections only");
            return ConnectionCapacity { connections: None };
        };
        let open = crate::metrics::process_open_fds().unwrap_or(0);
        let reserve = (MIN_RESERVE + limit / 64).min(MAX_RESERVE);
        let connections = limit.saturating_sub(open + reserve).max(1);
        if before < limit {
            tracing::info!("raised the open-file limit from {before} to {limit} (the hard limit)");
        }
        tracing::info!(
            "open-file limit {limit}: connection capacity {connections} ({open} descriptors in use, {reserve} kept in reserve)"
        );
        match max_connections {
            Some(max) if max > connections => tracing::warn!(
                "server.max_connections = {max} is more than the connection capacity {connections} that the open-file limit ({limit}) leaves: connections past {connections} get 503; raise the hard limit (ulimit -Hn, systemd LimitNOFILE=) to serve more"
            ),
            None => tracing::warn!(
                "server.max_connections is unlimited: connections past the capacity {connections} that the open-file limit ({limit}) leaves get 503"
            ),
            Some(_) => {}
        }
        ConnectionCapacity {
            connections: Some(connections),
        }
    }

    /// The connection limit in force: `max_connections`, or the capacity when that is lower.
    pub fn limit(&self, max_connections: Option<u64>) -> Option<u64> {
        match (max_connections, self.connections) {
            (Some(max), Some(capacity)) => Some(max.min(capacity)),
            (max, capacity) => max.or(capacity),
        }
    }
}

/// Sets the soft `RLIMIT_NOFILE` to the hard one; returns (soft before, soft now), or `None` when
/// there is no limit.
fn raise_open_file_limit() -> Option<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        tracing::warn!(
            error = %io::Error::last_os_error(),
            "cannot read the open-file limit"
        );
        return None;
    }
    let before = limit.rlim_cur;
    if before == libc::RLIM_INFINITY {
        return None;
    }
    if limit.rlim_max != limit.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        } else {
            tracing::warn!(
                error = %io::Error::last_os_error(),
                soft = before,
                hard = limit.rlim_max,
                "cannot raise the open-file limit to the hard limit"
            );
        }
    }
    Some((before, limit.rlim_cur))
}

/// Whether an `accept` error means the process (or system) is out of file descriptors.
pub fn out_of_descriptors(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// One descriptor held back (`/dev/null`) to be closed when `accept` fails for want of descriptors.
#[derive(Debug)]
pub struct SpareDescriptor(Option<std::fs::File>);

impl SpareDescriptor {
    /// Opens the spare.
    pub fn open() -> SpareDescriptor {
        SpareDescriptor(std::fs::File::open("/dev/null").ok())
    }

    /// Closes the spare, accepts one waiting client, answers it `refusal` and closes it, then opens
    /// the spare again. False when there was no spare or nobody could be accepted (the caller backs
    /// off).
    pub async fn answer_one(&mut self, listener: &TcpListener, refusal: &[u8]) -> bool {
        if self.0.take().is_none() {
            *self = SpareDescriptor::open();
            return false;
        }
        let accepted =
            tokio::time::timeout(std::time::Duration::from_millis(50), listener.accept()).await;
        let answered = match accepted {
            Ok(Ok((stream, peer))) => {
                crate::metrics::count_connection_refusal("open_files");
                tracing::debug!(%peer, "out of file descriptors: refused a connection");
                super::io::answer_at_once(&stream, refusal);
                true
            }
            _ => false,
        };
        *self = SpareDescriptor::open();
        answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_the_lower_of_max_connections_and_the_capacity() {
        let capacity = ConnectionCapacity {
            connections: Some(200),
        };
        assert_eq!(capacity.limit(Some(50_000)), Some(200));
        assert_eq!(capacity.limit(Some(10)), Some(10));
        assert_eq!(capacity.limit(None), Some(200));
        let unlimited = ConnectionCapacity { connections: None };
        assert_eq!(unlimited.limit(Some(10)), Some(10));
        assert_eq!(unlimited.limit(None), None);
    }
}
