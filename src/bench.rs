//! The bench half: talks AT to modems over serial, exports KEYGEN requests, imports bundles.
//!
//! [`transport`] is the only file that imports `serialport`; [`at`] is the pure response
//! parser; [`modem`] is the AT client for one device; [`export`] and [`import`] run every port
//! in parallel and keep their progress in [`state`]; [`worker`] holds what they share (per-port
//! runner, results, progress events, [`BenchError`]).

pub mod at;
pub mod claim;
pub mod code;
pub mod evidence;
pub mod export;
pub mod identity;
pub mod import;
pub mod modem;
pub mod state;
pub mod transport;
pub mod worker;

pub use at::Dialect;
pub use code::BenchCode;
pub use export::{export, DeviceId, ExportOptions, ExportReport};
pub use import::{
    import, import_verified, verify_bundle, ImportOptions, ImportReport, VerifiedImport,
};
pub use modem::DialectChoice;
pub use worker::{BenchError, DeviceResult, PortEvent, PortEventKind, PortSettings, Status};
