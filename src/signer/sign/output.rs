//! After the commit: the bundle written from `ca.db` (the batch's audit records in input
//! order, joined to their certificate rows; manifest signed last), and the follow-up
//! transaction that records `bundle-written`.

use std::sync::mpsc;

use serde_json::json;

use super::crash::crash_point;
use super::pipeline::Records;
use super::{AuditHead, SignError, SignOptions, SignReport};
use crate::bundle::{self, BundleError, BundleOptions, CertRow, Counts, Manifest, RejectsWriter};
use crate::signer::audit::{tree, AuditWriter};
use crate::signer::ca::CaCert;
use crate::signer::db::{self, Connection};
use crate::signer::key::CaSigner;
use crate::signer::staging::Staging;

/// Write the certificate half of the bundle of the committed `batch` from `ca.db`: the
/// batch's `certificate-issued` / `certificate-returned` audit records between `seqs`, in
/// order (= input order), each resolved to its certificate row; every PEM is re-derived from
/// the stored DER and checked against the recorded SHA-256. Then sign the manifest, last.
///
/// This thread reads `ca.db` and builds the rows; two more format, hash and write
/// `certs.csv` and the onboarding files, so the three overlap (serial, the phase took 0.8 s
/// at 100 000 requests on the 2-core bench machine).
#[allow(clippy::too_many_arguments)]
pub(super) fn write_bundle(
    conn: &Connection,
    key: &dyn CaSigner,
    cert: &CaCert,
    opts: &SignOptions,
    report: &SignReport,
    rejects: RejectsWriter,
    records: Records,
    chain_pem: Option<Vec<u8>>,
    quoted: &[crate::checkpoint::Checkpoint],
) -> Result<bundle::Finished, BundleError> {
    let mut b = rejects.into_bundle(
        cert.pem.as_bytes(),
        BundleOptions {
            sub_type: opts.sub_type.clone(),
            tags: opts.tags.clone(),
            fw_types: opts.fw_types.clone(),
            pem_files: opts.pem_files,
            chain_pem,
        },
    )?;
    const ROWS_PER_MSG: usize = 256;
    type Chunk = std::sync::Arc<Vec<(String, CertRow)>>;
    let (certs_part, onboard_part) = b.parts();
    let n = std::thread::scope(|s| -> Result<u64, BundleError> {
        let (certs_tx, certs_rx) = mpsc::sync_channel::<Chunk>(8);
        let (onboard_tx, onboard_rx) = mpsc::sync_channel::<Chunk>(8);
        let certs_writer = s.spawn(move || -> Result<(), BundleError> {
            for chunk in certs_rx {
                for (_, row) in chunk.iter() {
                    certs_part.add(row)?;
                }
            }
            Ok(())
        });
        let onboard_writer = s.spawn(move || -> Result<(), BundleError> {
            for chunk in onboard_rx {
                for (device_id, row) in chunk.iter() {
                    onboard_part.add(device_id, &row.certificate_pem)?;
                }
            }
            Ok(())
        });
        let send = |chunk: Vec<(String, CertRow)>| -> bool {
            let chunk = std::sync::Arc::new(chunk);
            // A send fails only when a writer stopped on an error, reported below.
            certs_tx.send(std::sync::Arc::clone(&chunk)).is_ok() && onboard_tx.send(chunk).is_ok()
        };
        let mut chunk = Vec::with_capacity(ROWS_PER_MSG);
        let mut n = 0u64;
        let read = read_batch_certs(conn, records, |device_id, row| {
            chunk.push((device_id, row));
            n += 1;
            if chunk.len() == ROWS_PER_MSG {
                return send(std::mem::replace(
                    &mut chunk,
                    Vec::with_capacity(ROWS_PER_MSG),
                ));
            }
            true
        });
        if !chunk.is_empty() {
            send(chunk);
        }
        drop((certs_tx, onboard_tx));
        for w in [certs_writer, onboard_writer] {
            w.join()
                .map_err(|_| BundleError::Sign("a bundle writer thread panicked".into()))??;
        }
        read?;
        Ok(n)
    })?;
    let expected = report.issued + report.returned;
    if n != expected {
        return Err(BundleError::MalformedManifest(format!(
            "ca.db holds {n} certificates for batch {}, its report {expected}",
            report.batch
        )));
    }
    add_checkpoint_files(conn, &mut b, quoted)?;
    b.finish(
        Manifest {
            format: String::new(),
            batch: report.batch.clone(),
            created_at: crate::signer::audit::now_rfc3339(),
            ca_sha256: cert.fingerprint.clone(),
            inputs: report.inputs.clone(),
            files: Vec::new(),
            counts: Counts {
                requests: report.requests,
                issued: report.issued,
                returned: report.returned,
                rejected: report.rejected,
            },
        },
        |bytes| {
            key.sign_der(bytes)
                .map_err(|e| crate::error::error_chain(&e))
        },
    )
}

/// How many of the CA's latest checkpoints a bundle also proves from, beside the ones its
/// inputs quote: a bench holds the checkpoint of the last bundle it imported, which its
/// requests may not quote (exported before that import, or by a bench not enrolled), and
/// must still be able to check that this bundle's log extends it. 64 proofs of at most ~40
/// hashes each: under 100 KiB per bundle.
pub const RECENT_PROOFS: usize = 64;

/// `checkpoint`, `checkpoint.sig` (the newest stored checkpoint: the one the batch's commit
/// signed, or a later one) and `checkpoint.proofs` (a consistency proof to it from each
/// checkpoint of this CA quoted in the inputs' statements, and from the CA's
/// [`RECENT_PROOFS`] latest checkpoints).
fn add_checkpoint_files(
    conn: &Connection,
    b: &mut bundle::BundleWriter,
    quoted: &[crate::checkpoint::Checkpoint],
) -> Result<(), BundleError> {
    let audit_err =
        |e: crate::signer::audit::AuditError| BundleError::Sign(crate::error::error_chain(&e));
    let signed = tree::newest(conn)
        .map_err(audit_err)?
        .ok_or_else(|| BundleError::Sign("ca.db holds no signed checkpoint".into()))?;
    let mut from: Vec<crate::checkpoint::Checkpoint> = quoted.to_vec();
    for s in tree::recent(conn, RECENT_PROOFS + 1).map_err(audit_err)? {
        let c = s.checkpoint;
        if c.size < signed.checkpoint.size && c.size > 0 && !from.contains(&c) {
            from.push(c);
        }
    }
    let proofs = if from.is_empty() {
        // Nothing to prove from.
        crate::checkpoint::ProofFile {
            to: signed.checkpoint.clone(),
            proofs: Vec::new(),
        }
    } else {
        let t = tree::LogNodes::open(conn, Some(signed.checkpoint.size)).map_err(audit_err)?;
        crate::checkpoint::ProofFile::build(&t, &signed.checkpoint, &from)
            .map_err(|e| BundleError::Sign(format!("checkpoint proofs: {e}")))?
    };
    b.add_file(bundle::CHECKPOINT_FILE, signed.text.as_bytes())?;
    b.add_file(bundle::CHECKPOINT_SIG_FILE, signed.sig_file().as_bytes())?;
    b.add_file(bundle::CHECKPOINT_PROOFS_FILE, proofs.to_text().as_bytes())?;
    Ok(())
}

/// Call `each(device_id, row)` for every certificate of the committed batch, in input order:
/// walk the batch's audit records (seq between `records.seqs`); a `certificate-issued` record takes
/// the next row of the certificates inserted by the batch (rowid from `first_rowid` on, the
/// same order: the batch held the write lock), a `certificate-returned` record looks its
/// serial up. Every issued row must carry the serial its record names. `each` returns false
/// to stop early.
fn read_batch_certs(
    conn: &Connection,
    records: Records,
    mut each: impl FnMut(String, CertRow) -> bool,
) -> Result<(), BundleError> {
    db::certificates::for_each_in_batch(conn, records.seqs, records.first_rowid, |c| {
        let pem = crate::util::pem_encode("CERTIFICATE", &c.der);
        if crate::crypto::sha256_hex(pem.as_bytes()) != c.cert_sha256 {
            return Err(BundleError::HashMismatch(format!(
                "certificate of {} in ca.db (its cert_sha256 does not match its DER)",
                c.device_id
            )));
        }
        if c.serial != c.recorded_serial {
            return Err(BundleError::MalformedManifest(format!(
                "ca.db's certificate rows of the batch are not in the order of its audit records (serial {} where the record names {})",
                c.serial, c.recorded_serial
            )));
        }
        let row = CertRow {
            device_uuid: c.uuid,
            imei: c.imei.unwrap_or_default(),
            sec_tag: c.sec_tag,
            serial: c.serial,
            not_before: c.not_before,
            not_after: c.not_after,
            sha256: c.cert_sha256,
            certificate_pem: pem,
        };
        Ok(each(c.device_id, row))
    })
}

impl From<db::certificates::BatchReadError> for BundleError {
    // BundleError (crate::bundle) keeps its String payloads; the words are the read error's
    // own, with its cause.
    fn from(e: db::certificates::BatchReadError) -> Self {
        match e {
            db::certificates::BatchReadError::Sqlite(_) => {
                BundleError::Sign(crate::error::error_chain(&e))
            }
            db::certificates::BatchReadError::NoRow { .. } => {
                BundleError::MalformedManifest(e.to_string())
            }
        }
    }
}

/// The follow-up transaction after the rename: `bundle-written`, the staging directory
/// unregistered, and a checkpoint.
pub(super) fn record_bundle(
    conn: &mut Connection,
    key: &dyn CaSigner,
    opts: &SignOptions,
    batch: &str,
    finished: &bundle::Finished,
    staging: &Staging,
) -> Result<AuditHead, SignError> {
    let tx = db::begin_immediate(conn)?;
    let mut audit = AuditWriter::new(&tx, &opts.operator)?;
    audit.append(
        &tx,
        "bundle-written",
        &json!({
            "batch": batch,
            "path": opts.out.display().to_string(),
            "manifest_sha256": finished.manifest_sha256,
            "files": finished.manifest.files.len(),
        }),
    )?;
    staging.unregister_in(&tx)?;
    audit.checkpoint(&tx, key)?;
    crash_point("bundle-audited", 0);
    let (seq, hash) = audit.head();
    let head = AuditHead {
        seq,
        hash: hash.to_string(),
    };
    drop(audit);
    tx.commit()?;
    Ok(head)
}
