//! Interrupt requests: SIGINT, SIGTERM and SIGHUP turned into a flag that long-running
//! library calls poll, so a Ctrl-C, a `kill` or a closed terminal ends them at a point where
//! nothing is half done (the batch of `sign` rolls back; see docs/threat-model.md). SIGKILL
//! cannot be caught: `sign` is built so that dying at any instant is safe anyway.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The signals [`install`] catches.
pub const SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

fn flag() -> &'static Arc<AtomicUsize> {
    static FLAG: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    FLAG.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Catch SIGINT, SIGTERM and SIGHUP from now on: instead of ending the process they set the
/// flag [`requested`] reads. Call it only around work that polls [`requested`] (the CLI does,
/// after any passphrase prompt: a Ctrl-C at a prompt still ends the process at once).
pub fn install() -> std::io::Result<()> {
    for sig in SIGNALS {
        signal_hook::flag::register_usize(sig, Arc::clone(flag()), sig as usize)?;
    }
    Ok(())
}

/// The signal that asked us to stop, if any arrived since [`install`].
pub fn requested() -> Option<i32> {
    match flag().load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// The name of a caught signal, for messages (`SIGINT`, …).
pub fn name(sig: i32) -> &'static str {
    match sig {
        libc::SIGINT => "SIGINT",
        libc::SIGTERM => "SIGTERM",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}
