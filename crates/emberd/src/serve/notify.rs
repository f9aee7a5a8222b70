//! systemd readiness protocol (sd_notify(3)) over the `sd-notify` crate: `READY=1` once the
//! model is loaded and the listeners are up, `STATUS=` lines for `systemctl status`,
//! `STOPPING=1` on shutdown, `EXTEND_TIMEOUT_USEC=` while a slow model load runs, and watchdog
//! pings when the unit sets `WatchdogSec=`.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (not started by systemd, or `Type=simple`), and
//! a failure to notify is logged, never returned: the daemon must not die because its service
//! manager went away.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!("sd_notify {states:?} failed: {e}");
    }
}

/// The daemon is serving (`Type=notify` units count as started from here).
pub fn ready() {
    send(&[NotifyState::Ready]);
}

/// The daemon is shutting down (draining in-flight requests).
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// A one-line status shown by `systemctl status` (e.g. "loading qwen2.5-1.5b…", "serving").
pub fn status(msg: &str) {
    // A newline would start a new (unintended) assignment in the datagram.
    let line = msg.replace(['\n', '\r'], " ");
    send(&[NotifyState::Status(&line)]);
}

/// Asks systemd for `extra` more time in the current state (start-up or stop), so a large model
/// loading from an SD card does not hit `TimeoutStartSec=`. Call it again before it runs out.
pub fn extend_timeout(extra: Duration) {
    let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
    send(&[NotifyState::ExtendTimeoutUsec(usec)]);
}

/// The watchdog interval when the unit sets `WatchdogSec=` (from `WATCHDOG_USEC`, checked
/// against `WATCHDOG_PID`); `None` otherwise.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
}

/// One watchdog ping (`WATCHDOG=1`).
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// When the watchdog is enabled, spawns a task on the current tokio runtime that pings at half
/// the interval (as sd_watchdog_enabled(3) advises) while `alive()` holds — give it a check of
/// the engine thread so a wedged engine gets the unit restarted. Returns `None` when disabled.
pub fn spawn_watchdog(
    alive: impl Fn() -> bool + Send + 'static,
) -> Option<tokio::task::JoinHandle<()>> {
    let interval = watchdog_interval()?;
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("spawn_watchdog called outside a tokio runtime; no watchdog pings");
        return None;
    };
    let period = (interval / 2).max(Duration::from_millis(100));
    tracing::info!("systemd watchdog every {interval:?}; pinging every {period:?}");
    Some(rt.spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if alive() {
                watchdog();
            } else {
                tracing::error!("engine not responding; withholding the watchdog ping");
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without NOTIFY_SOCKET (the test environment) every call returns quietly.
    #[test]
    fn every_call_is_a_no_op_outside_systemd() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return; // running under a notify-aware supervisor: do not send it anything
        }
        ready();
        status("loading\nmodel");
        extend_timeout(Duration::from_secs(3600 * 24 * 365));
        watchdog();
        stopping();
    }
}
