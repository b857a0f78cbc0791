//! The air-gapped half: CA key custody, request policy, issuance, the CA database, the audit log.
//!
//! How signing works: [`ca`] unlocks the age-encrypted key ([`secret`]); [`sign`] streams the
//! requests ([`crate::requests`]), checks each one ([`crate::keygen`] then [`policy`]), builds
//! certificates from the profile ([`issue`]), records everything in one [`db`] transaction with
//! its [`audit`] records, and writes the signed [`crate::bundle`]. No serial code is reachable
//! from here.

pub mod audit;
pub mod ca;
pub mod ca_files;
pub mod db;
pub mod evidence;
pub mod issue;
pub mod key;
pub mod lifecycle;
pub mod policy;
pub mod protect;
pub mod report;
pub mod secret;
pub mod sign;
pub mod staging;
