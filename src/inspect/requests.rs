//! Requests files for `nrfca inspect`: every request judged as `sign` would, without a CA
//! database (the checks against earlier batches are left out).

use super::*;
use crate::requests::{Entry, SourceReader};
use crate::signer::policy::{BatchPolicy, Decision, Lookup};

struct NoDb;

impl Lookup for NoDb {
    type Error = std::convert::Infallible;
    fn by_keygen(
        &mut self,
        _: &str,
        _: &[u8; 65],
    ) -> Result<Option<crate::signer::policy::Stored>, Self::Error> {
        Ok(None)
    }
    fn device_has_certificate(&mut self, _: &str) -> Result<bool, Self::Error> {
        Ok(false)
    }
    fn key_owner(&mut self, _: &[u8; 65]) -> Result<Option<String>, Self::Error> {
        Ok(None)
    }
}

/// Judge every request of a requests file as `sign` would (without a CA database: the
/// checks against earlier batches are left out).
pub fn inspect_requests(input: &[u8], opts: &CheckOptions) -> Report {
    let mut r = base_report(InputKind::Requests, input);
    let mut src = SourceReader::new("input", input);
    let mut policy = BatchPolicy::new(false);
    let mut info = RequestsInfo {
        format: "lines".into(),
        total: 0,
        ok: 0,
        rejected: Default::default(),
        items: Vec::new(),
    };
    loop {
        let entry = match src.next_entry() {
            Ok(Some(e)) => e,
            Ok(None) => break,
            Err(e) => {
                set_verdict(
                    &mut r,
                    Err(Reject::new(
                        RejectCode::MalformedInput,
                        crate::error::error_chain(&e),
                    )),
                );
                return r;
            }
        };
        info.total += 1;
        let item = match entry {
            Entry::Malformed(m) => RequestVerdict {
                line: m.line,
                device_uuid: m.device_uuid,
                verdict: m.reject.code.as_str().into(),
                detail: Some(m.reject.detail),
            },
            Entry::Request(q) => {
                if q.row.is_some() {
                    info.format = "csv".into();
                }
                let imei = q
                    .row
                    .as_ref()
                    .map(|row| row.imei.trim())
                    .filter(|s| !s.is_empty())
                    .map(str::to_string);
                let o = CheckOptions {
                    imei: imei.or_else(|| opts.imei.clone()),
                    ..opts.clone()
                };
                let verdict = keygen::check(&q.keygen, &o).and_then(|v| {
                    match policy.decide(&v, q.row.as_ref(), &mut NoDb) {
                        Ok(Decision::Reject(rej)) => Err(rej),
                        _ => Ok(v),
                    }
                });
                match verdict {
                    Ok(v) => RequestVerdict {
                        line: q.line,
                        device_uuid: Some(v.uuid),
                        verdict: "ok".into(),
                        detail: None,
                    },
                    Err(rej) => RequestVerdict {
                        line: q.line,
                        device_uuid: q
                            .row
                            .as_ref()
                            .map(|row| row.device_uuid.clone())
                            .filter(|u| !u.is_empty()),
                        verdict: rej.code.as_str().into(),
                        detail: Some(rej.detail),
                    },
                }
            }
        };
        if item.verdict == "ok" {
            info.ok += 1;
        } else {
            *info.rejected.entry(item.verdict.clone()).or_insert(0) += 1;
        }
        info.items.push(item);
    }
    if info.total == 0 {
        set_verdict(
            &mut r,
            Err(Reject::new(
                RejectCode::MalformedInput,
                "no requests in the input",
            )),
        );
    } else if info.ok == info.total {
        r.detail = format!("all {} requests pass", info.total);
    } else {
        r.valid = false;
        let (code, _) = info
            .rejected
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(c, n)| (c.clone(), *n))
            .unwrap_or_default();
        r.code = Some(code);
        r.detail = format!(
            "{} of {} requests would be rejected",
            info.total - info.ok,
            info.total
        );
    }
    r.requests = Some(info);
    r
}
