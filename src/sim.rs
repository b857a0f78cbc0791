//! Simulated nRF91 modems on pseudo-terminals, driven by the tests, `nrfca sim` and the demo.
//!
//! Each modem is an AT command `engine` (pure: bytes in, reply out) behind the AT host
//! receiver and reply `framing`, with its credential `storage`, `identity` and
//! `profile`, on its own `pty` served by a thread of the [`Simulator`]. `fault`s make
//! it misbehave the way real benches do; `state` keeps modems across runs.
//! User documentation: `docs/simulator.md`.
//!
//! ```no_run
//! use nrfca::sim::{Fault, SimConfig, Simulator};
//! let sim = Simulator::start(SimConfig { count: 4, ..SimConfig::default() })?;
//! sim.set_faults(2, vec![Fault::LostFinal]);   // only modem 2 misbehaves, once
//! for port in sim.ports() { println!("{}", port.display()); }
//! let snap = sim.snapshot(0);
//! println!("{} {}", snap.imei, snap.uuid);
//! sim.shutdown()?;
//! # Ok::<(), nrfca::sim::SimError>(())
//! ```

// Public: the simulator (re-exported below) and the request generator (`nrfca gen`). The AT
// engine, framing, storage, faults and ptys are private (tests and fuzz targets reach them
// through `crate::internal`).
pub mod generate;

pub(crate) mod engine;
pub(crate) mod fault;
pub(crate) mod framing;
pub(crate) mod identity;
mod profile;
mod pty;
pub(crate) mod rng;
mod shell;
mod simulator;
mod state;
pub(crate) mod storage;

pub use fault::{Fault, FaultSpec};
pub use profile::{CommandClass, Latency, Profile};
pub use simulator::{Credential, ModemSnapshot, SimConfig, Simulator};
pub use storage::Origin;

use std::path::PathBuf;

/// Why the simulator could not start or save. Display is this layer's sentence; an OS error
/// is the `source()` (docs/architecture.md, "Errors"). The `String` payloads are words (the
/// state file's problem with the modem it is in, the link that failed and why): no caller
/// tells their kinds apart.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A pseudo-terminal could not be created or configured.
    #[error("cannot create a pseudo-terminal; check /dev/ptmx exists and /dev/pts is mounted")]
    Pty(#[source] nix::errno::Errno),
    /// The state file is unreadable, malformed or could not be written.
    #[error("simulator state file {}: {msg}; fix or delete it (it only holds simulated modems)", path.display())]
    State {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A symlink in the link directory could not be made.
    #[error("link {}: {msg}", path.display())]
    LinkDir {
        /// The link or directory.
        path: PathBuf,
        /// What is wrong.
        msg: String,
    },
    /// A modem identity could not be created or loaded.
    #[error("cannot create a simulated modem identity: {0}")]
    Identity(String),
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
}
