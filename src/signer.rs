//! The air-gapped half: CA key custody, request policy, issuance, the CA database, the audit log.
//!
//! How signing works: [`ca`] unlocks the age-encrypted key ([`secret`]); [`sign`] streams the
//! requests ([`crate::requests`]), checks each one ([`crate::keygen`] then `policy`), builds
//! certificates from the profile (`issue`), records everything in one `db` transaction with
//! its [`audit`] records, and writes the signed [`crate::bundle`]. No serial code is reachable
//! from here.

// The operations and the types their callers name are public; the database, the staging
// area, the certificate template, the batch policy and the evidence records are the signer's
// own (reached from tests through `crate::internal`).
pub mod audit;
pub mod ca;
pub mod key;
pub mod lifecycle;
pub mod protect;
pub mod report;
pub mod secret;
pub mod sign;

pub(crate) mod ca_files;
pub(crate) mod db;
pub(crate) mod evidence;
pub(crate) mod issue;
pub(crate) mod policy;
pub(crate) mod staging;

// Errors of the private layers that the operations' errors carry.
pub use db::DbError;
pub use issue::IssueError;
pub use staging::StagingError;
