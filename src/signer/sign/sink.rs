//! Where the coordinator puts each decided request: a [`Sink`]. [`Recording`] writes the
//! batch's `ca.db` rows and audit records in the batch transaction, streams rejects to the
//! staging `rejects.csv`, and holds the key the workers sign with; [`DryRun`] writes nothing
//! and signs nothing (`sign --dry-run`). The pipeline is the same for both.

use std::collections::BTreeMap;

use serde_json::json;

use super::pipeline::Batch;
use super::{AuditHead, SignError, MAX_RECORDED_REJECTS};
use crate::bundle::{self, Counts, FileDigest, RejectsWriter};
use crate::keygen::DeviceIdMode;
use crate::signer::audit::{AuditWriter, Details};
use crate::signer::db::{self, Connection};
use crate::signer::key::CaSigner;
use crate::signer::policy::Stored;

/// A rejected request, as the sink records it.
pub(super) struct RejectOut<'r> {
    pub source: &'r str,
    pub line: u64,
    /// Empty when unknown.
    pub device_uuid: &'r str,
    pub code: &'r str,
    pub detail: &'r str,
    pub keygen_sha256: Option<&'r str>,
    /// Recorded one by one (`rejects` row + `request-rejected`), or only counted.
    pub one_by_one: bool,
}

/// An issued certificate, as the sink records it.
pub(super) struct IssuedOut<'r> {
    pub serial_hex: &'r str,
    pub device_id: &'r str,
    pub uuid: &'r str,
    pub imei: Option<&'r str>,
    pub sec_tag: u32,
    pub public_key: &'r [u8],
    pub keygen_sha256: &'r str,
    pub cert_sha256: &'r str,
    pub der: &'r [u8],
    pub reissue: bool,
    /// The rowid the certificate row must get (the bundle is read back in rowid order).
    pub want_rowid: i64,
}

/// What the batch did, for `batch-committed`.
pub(super) struct Summary<'r> {
    pub counts: &'r Counts,
    pub by_code: &'r BTreeMap<String, u64>,
    pub inputs: &'r [FileDigest],
}

/// The end of the batch's records: the seq of `batch-committed` and the head after the
/// checkpoint (0 and None for a dry run).
pub(super) struct Committed {
    pub last_seq: u64,
    pub head: Option<AuditHead>,
}

/// Where decided requests go (see the module docs). `'k`: the key's lifetime.
pub(super) trait Sink<'k> {
    /// The key the workers sign with; None: nothing is signed (dry run).
    fn key(&self) -> Option<&'k dyn CaSigner>;
    /// The batch starts (`batches` row, `batch-started`); returns the record's seq.
    fn start(&mut self, b: &Batch<'_>) -> Result<u64, SignError>;
    /// A request was rejected.
    fn reject(&mut self, b: &Batch<'_>, r: &RejectOut<'_>) -> Result<(), SignError>;
    /// An identical KEYGEN got its stored certificate back.
    fn returned(&mut self, b: &Batch<'_>, stored: &Stored) -> Result<(), SignError>;
    /// A certificate was issued (signed by a worker).
    fn issued(&mut self, b: &Batch<'_>, c: &IssuedOut<'_>) -> Result<(), SignError>;
    /// Every request is written: `batches` row completed, `batch-committed`, checkpoint.
    fn commit(&mut self, b: &Batch<'_>, s: &Summary<'_>) -> Result<Committed, SignError>;
}

/// `sign --dry-run`: every check runs, nothing is signed or written.
pub(super) struct DryRun;

impl<'k> Sink<'k> for DryRun {
    fn key(&self) -> Option<&'k dyn CaSigner> {
        None
    }
    fn start(&mut self, _: &Batch<'_>) -> Result<u64, SignError> {
        Ok(0)
    }
    fn reject(&mut self, _: &Batch<'_>, _: &RejectOut<'_>) -> Result<(), SignError> {
        Ok(())
    }
    fn returned(&mut self, _: &Batch<'_>, _: &Stored) -> Result<(), SignError> {
        Ok(())
    }
    fn issued(&mut self, _: &Batch<'_>, _: &IssuedOut<'_>) -> Result<(), SignError> {
        Ok(())
    }
    fn commit(&mut self, _: &Batch<'_>, _: &Summary<'_>) -> Result<Committed, SignError> {
        Ok(Committed {
            last_seq: 0,
            head: None,
        })
    }
}

/// A real batch: rows and audit records in the batch transaction, rejects to `rejects.csv`.
pub(super) struct Recording<'k> {
    conn: &'k Connection,
    key: &'k dyn CaSigner,
    audit: AuditWriter,
    rejects: RejectsWriter,
}

impl<'k> Recording<'k> {
    /// Inside the batch's IMMEDIATE transaction `conn` (the audit head is read once, here).
    pub(super) fn new(
        conn: &'k Connection,
        key: &'k dyn CaSigner,
        rejects: RejectsWriter,
        operator: &str,
    ) -> Result<Self, SignError> {
        Ok(Recording {
            conn,
            key,
            audit: AuditWriter::new(conn, operator)?,
            rejects,
        })
    }

    /// The rejects writer, for the bundle written after the commit.
    pub(super) fn into_rejects(self) -> RejectsWriter {
        self.rejects
    }
}

impl<'k> Sink<'k> for Recording<'k> {
    fn key(&self) -> Option<&'k dyn CaSigner> {
        Some(self.key)
    }

    fn start(&mut self, b: &Batch<'_>) -> Result<u64, SignError> {
        let opts = b.opts;
        let input_names: Vec<String> = opts
            .inputs
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        db::batches::start(
            self.conn,
            b.id,
            &crate::signer::audit::now_rfc3339(),
            &opts.operator,
        )?;
        let mut details = json!({
                "batch": b.id,
                "inputs": input_names,
                "days": opts.days,
                "not_before": b.nb_text,
                "not_after": b.na_text,
                "sec_tag": opts.sec_tag,
                "device_id": match opts.device_id { DeviceIdMode::Uuid => "uuid", DeviceIdMode::Cn => "cn" },
                "reissue": opts.reissue,
                "ca_fingerprint": b.cert.fingerprint,
        });
        if let Some(p) = b.provenance {
            details["provenance"] = p.clone();
        }
        if let Some((_, e)) = b.expected {
            details["expect"] = e.clone();
        }
        Ok(self.audit.append(self.conn, "batch-started", &details)?)
    }

    fn reject(&mut self, b: &Batch<'_>, r: &RejectOut<'_>) -> Result<(), SignError> {
        if r.one_by_one {
            db::rejects::insert(
                self.conn,
                &db::rejects::NewReject {
                    batch_id: b.id,
                    source: r.source,
                    line: r.line,
                    device_uuid: Some(r.device_uuid).filter(|u| !u.is_empty()),
                    code: r.code,
                    detail: r.detail,
                    keygen_sha256: r.keygen_sha256,
                },
            )?;
            self.audit.append_canonical(
                self.conn,
                "request-rejected",
                &rejected_details(
                    b.id,
                    r.source,
                    r.line,
                    r.device_uuid,
                    r.code,
                    r.detail,
                    r.keygen_sha256,
                ),
            )?;
        }
        self.rejects
            .add_reject(r.source, r.line, r.device_uuid, r.code, r.detail)?;
        Ok(())
    }

    fn returned(&mut self, b: &Batch<'_>, stored: &Stored) -> Result<(), SignError> {
        // The bundle row is written after the commit, from this audit record.
        self.audit.append_canonical(
            self.conn,
            "certificate-returned",
            &returned_details(b.id, stored),
        )?;
        Ok(())
    }

    fn issued(&mut self, b: &Batch<'_>, c: &IssuedOut<'_>) -> Result<(), SignError> {
        let rowid = db::certificates::insert(
            self.conn,
            &db::certificates::NewCertificate {
                serial: c.serial_hex,
                device_id: c.device_id,
                uuid: c.uuid,
                imei: c.imei,
                sec_tag: c.sec_tag,
                public_key: c.public_key,
                keygen_sha256: c.keygen_sha256,
                cert_sha256: c.cert_sha256,
                der: c.der,
                not_before: &b.nb_text,
                not_after: &b.na_text,
                batch_id: b.id,
                reissue: c.reissue,
            },
        )?;
        // The bundle is read back after the commit in rowid order: the rows of the batch
        // must follow one another from its first rowid, or the batch rolls back now.
        if rowid != c.want_rowid {
            return Err(SignError::Internal(format!(
                "certificate row {} got rowid {rowid}, not {}; ca.db's certificates table is not as nrfca made it (run audit verify)",
                c.serial_hex, c.want_rowid
            )));
        }
        self.audit
            .append_canonical(self.conn, "certificate-issued", &issued_details(b.id, c))?;
        Ok(())
    }

    fn commit(&mut self, b: &Batch<'_>, s: &Summary<'_>) -> Result<Committed, SignError> {
        let counts = s.counts;
        let inputs_json = serde_json::to_string(s.inputs).unwrap_or_else(|_| "[]".into());
        db::batches::commit(
            self.conn,
            b.id,
            &db::batches::Committed {
                committed_at: &crate::signer::audit::now_rfc3339(),
                inputs_json: &inputs_json,
                issued: counts.issued,
                returned: counts.returned,
                rejected: counts.rejected,
            },
        )?;
        let unrecorded = counts.rejected.saturating_sub(MAX_RECORDED_REJECTS);
        let last_seq = self.audit.append(
            self.conn,
            "batch-committed",
            &json!({
                "batch": b.id,
                "requests": counts.requests,
                "issued": counts.issued,
                "returned": counts.returned,
                "rejected": counts.rejected,
                "rejected_by_code": s.by_code,
                "rejects_unrecorded": unrecorded,
                "inputs": s.inputs,
                "manifest_files": bundle::file_count(counts.issued + counts.returned, b.opts.pem_files),
            }),
        )?;
        self.audit.checkpoint(self.conn, self.key)?;
        let (seq, hash) = self.audit.head();
        Ok(Committed {
            last_seq,
            head: Some(AuditHead {
                seq,
                hash: hash.to_string(),
            }),
        })
    }
}

/// Details of `certificate-issued` (canonical: keys in byte order).
/// `imei`, `sec_tag` and `uuid` let `audit verify` check those `certificates` columns too
/// (records written before they were added are not checked for them).
fn issued_details(batch: &str, c: &IssuedOut<'_>) -> String {
    Details::with_capacity(400)
        .str("batch", batch)
        .str("cert_sha256", c.cert_sha256)
        .str("device_id", c.device_id)
        .opt_str("imei", c.imei)
        .str("keygen_sha256", c.keygen_sha256)
        .bool("reissue", c.reissue)
        .uint("sec_tag", u64::from(c.sec_tag))
        .str("serial", c.serial_hex)
        .str("uuid", c.uuid)
        .finish()
}

/// Details of `certificate-returned` (canonical).
fn returned_details(batch: &str, stored: &Stored) -> String {
    Details::with_capacity(320)
        .str("batch", batch)
        .str("cert_sha256", &stored.cert_sha256)
        .str("device_id", &stored.device_id)
        .str("keygen_sha256", &stored.keygen_sha256)
        .str("serial", &stored.serial)
        .finish()
}

/// Details of `request-rejected` (canonical).
fn rejected_details(
    batch: &str,
    source: &str,
    line: u64,
    device_uuid: &str,
    code: &str,
    detail: &str,
    keygen_sha256: Option<&str>,
) -> String {
    Details::with_capacity(320)
        .str("batch", batch)
        .str("code", code)
        .str("detail", detail)
        .str("device_uuid", device_uuid)
        .opt_str("keygen_sha256", keygen_sha256)
        .uint("line", line)
        .str("source", source)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signer::audit::canonical_json;
    use serde_json::json;

    /// The hand-built details are byte-equal to the canonical JSON of the same object, so
    /// records written by `sign` hash and verify like any other (tricky strings included).
    #[test]
    fn hand_built_details_are_canonical() {
        let odd = "a \"quoted\", back\\slash, tab\t, nl\n, ctrl \u{1}, é, 😀";
        for (s, b) in [("b1", "plain"), (odd, odd), ("", "")] {
            let issued = |reissue, imei, sec_tag| IssuedOut {
                serial_hex: s,
                device_id: s,
                uuid: s,
                imei,
                sec_tag,
                public_key: &[],
                keygen_sha256: s,
                cert_sha256: s,
                der: &[],
                reissue,
                want_rowid: 0,
            };
            assert_eq!(
                issued_details(b, &issued(true, Some(s), 16842753)),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": s,
                    "keygen_sha256": s, "cert_sha256": s, "reissue": true, "uuid": s,
                    "imei": s, "sec_tag": 16842753}))
            );
            assert_eq!(
                issued_details(b, &issued(false, None, 0)),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": s,
                    "keygen_sha256": s, "cert_sha256": s, "reissue": false, "uuid": s,
                    "imei": null, "sec_tag": 0}))
            );
            let stored = Stored {
                serial: s.into(),
                device_id: b.into(),
                uuid: s.into(),
                imei: None,
                sec_tag: 1,
                keygen_sha256: s.into(),
                cert_sha256: b.into(),
                pem: String::new(),
                not_before: String::new(),
                not_after: String::new(),
            };
            assert_eq!(
                returned_details(b, &stored),
                canonical_json(&json!({"batch": b, "serial": s, "device_id": b,
                    "keygen_sha256": s, "cert_sha256": b}))
            );
            for kg in [Some(s), None] {
                assert_eq!(
                    rejected_details(b, s, 7, s, "bad-base64", odd, kg),
                    canonical_json(&json!({"batch": b, "source": s, "line": 7,
                        "device_uuid": s, "code": "bad-base64", "detail": odd,
                        "keygen_sha256": kg}))
                );
            }
        }
    }
}
