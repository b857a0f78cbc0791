//! The bench half: talks AT to modems over serial, exports KEYGEN requests, imports bundles.
//!
//! [`transport`] is the only file that imports `serialport`; [`at`] is the pure response
//! parser; [`modem`] is the AT client for one device; [`export`] and [`import`] run every port
//! in parallel and keep their progress in [`state`].

pub mod at;
pub mod export;
pub mod import;
pub mod modem;
pub mod state;
pub mod transport;
