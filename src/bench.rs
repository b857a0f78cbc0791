//! The bench half: talks AT to modems over serial, exports KEYGEN requests, imports bundles.
//!
//! [`transport`] is the only file that imports `serialport`; `at` is the pure response
//! parser; `modem` is the AT client for one device; [`export`] and [`import`] run every port
//! in parallel and keep their progress in [`state`]; `worker` holds what they share (per-port
//! runner, results, progress events, [`BenchError`]).

// Public: the workflows (re-exported below), the bench's state and evidence files and the
// serial ports. The AT parser, the modem client, the per-port runner and the bench identity
// are private (tests reach them through `crate::internal`).
pub mod evidence;
pub mod state;
pub mod transport;

pub(crate) mod at;
mod claim;
mod code;
mod export;
pub(crate) mod identity;
pub(crate) mod import;
mod modem;
mod worker;

pub use at::Dialect;
pub use at::EncodeError;
pub use code::BenchCode;
pub use export::{export, DeviceId, ExportOptions, ExportReport};
pub use identity::{BenchIdentity, IdentityError};
pub use import::{
    import, import_verified, verify_bundle, ImportOptions, ImportReport, VerifiedImport,
};
pub use modem::DialectChoice;
pub use modem::Timeouts;
pub use worker::{BenchError, DeviceResult, PortEvent, PortEventKind, PortSettings, Status};
