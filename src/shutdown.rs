//! `Shutdown`: the one signal every long-lived loop (subscriber streams, the sweeper, the accept loop)
//! waits on, so that a SIGTERM/SIGINT ends them all cleanly.

use tokio::sync::watch;

/// Sends the shutdown signal; dropping it also signals.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// Receives the shutdown signal. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A connected trigger and receiver.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Tells every `Shutdown` to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// True once shutdown has been signalled.
    pub fn is_shutdown(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when shutdown is signalled (at once if it already was).
    pub async fn recv(&mut self) {
        // An error means the trigger was dropped, which also means shut down.
        let _ = self.0.wait_for(|down| *down).await;
    }
}
