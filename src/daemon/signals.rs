//! Signals become data: TERM/INT → [`Control::Stop`], HUP →
//! [`Control::Reload`], USR1 → [`Control::Snapshot`], sent by a small thread
//! to the supervisor. A second TERM or INT exits from the handler itself.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context as _;
use crossbeam_channel::Sender;

use super::Control;

/// Routes TERM/INT/HUP/USR1 into `control_tx`. A second TERM or INT exits
/// the process at once with `quit_code`. Returns the handle that stops the
/// forwarding thread.
pub fn forward_signals(
    control_tx: Sender<Control>,
    quit_code: i32,
) -> anyhow::Result<signal_hook::iterator::Handle> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
    let stopping = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        // Order matters: the exit is armed by the first signal, fired by the second.
        signal_hook::flag::register_conditional_shutdown(signal, quit_code, stopping.clone())
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, stopping.clone())
            .context("cannot install the signal handlers")?;
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("cannot install the signal handlers")?;
    let handle = signals.handle();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for signal in signals.forever() {
                let control = match signal {
                    SIGHUP => Control::Reload,
                    SIGUSR1 => Control::Snapshot,
                    _ => Control::Stop,
                };
                if control_tx.send(control).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(handle)
}
