//! The text form of an inspect [`Report`].

use super::*;

fn push_kv(out: &mut String, k: &str, v: &str) {
    out.push_str(&format!("  {k:<15} {v}\n"));
}

fn render_csr(out: &mut String, c: &CsrInfo) {
    out.push_str(&format!(
        "CSR ({} bytes, SHA-256 {})\n",
        c.der_length, c.sha256
    ));
    push_kv(out, "subject", &c.subject);
    push_kv(out, "key", &render_key(&c.key));
    push_kv(
        out,
        "signature",
        &format!(
            "{}{}, {}",
            c.signature_algorithm,
            if c.null_param {
                " with NULL parameter (nRF91 firmware quirk, accepted)"
            } else {
                ""
            },
            if c.signature_ok {
                "verifies"
            } else {
                "DOES NOT VERIFY"
            }
        ),
    );
    for e in &c.requested_extensions {
        push_kv(
            out,
            "requested ext",
            &format!(
                "{}{}: {} (ignored when signing)",
                e.name,
                if e.critical { " (critical)" } else { "" },
                e.value
            ),
        );
    }
}

fn render_key(k: &KeyInfo) -> String {
    match &k.public_key {
        Some(p) if k.valid => format!("{} {p}", k.algorithm),
        Some(p) => format!("{} {p} (NOT A VALID POINT)", k.algorithm),
        None => k.algorithm.clone(),
    }
}

fn render_cose(out: &mut String, c: &CoseInfo) {
    push_kv(
        out,
        "COSE_Sign1",
        &format!(
            "{}{}, kid {}, {}-byte signature",
            if c.tagged { "tag 18, " } else { "" },
            c.alg,
            c.kid,
            c.signature_length
        ),
    );
    push_kv(out, "COSE signature", &c.signature);
}

/// The report as human-readable text (what `nrfca inspect` prints without `--json`).
pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    if let Some(k) = &r.keygen {
        out.push_str(&format!("KEYGEN string ({} characters)\n", k.length));
        if let Some(u) = &k.uuid {
            push_kv(&mut out, "device UUID", u);
        }
        if let Some(t) = k.sec_tag {
            push_kv(&mut out, "sec_tag", &t.to_string());
        }
        if let Some(m) = k.msg_type {
            let name = match m {
                9 => " (CSR)",
                8 => " (public key)",
                _ => " (unknown)",
            };
            push_kv(&mut out, "message type", &format!("{m}{name}"));
        }
        if let (Some(d), Some(ok)) = (&k.digest, k.digest_ok) {
            push_kv(
                &mut out,
                "digest",
                &format!(
                    "{d} ({})",
                    if ok {
                        "matches the first half"
                    } else {
                        "DOES NOT MATCH the first half"
                    }
                ),
            );
        }
        if let Some(n) = &k.nonce {
            push_kv(&mut out, "nonce", n);
        }
        if let Some(c) = &k.cose {
            render_cose(&mut out, c);
        }
        push_kv(&mut out, "KEYGEN SHA-256", &k.keygen_sha256);
        for p in &k.problems {
            push_kv(&mut out, "problem", p);
        }
        if let Some(c) = &k.csr {
            render_csr(&mut out, c);
        }
        if let Some(pk) = &k.public_key {
            out.push_str("Public key (response_content 1)\n");
            push_kv(&mut out, "key", &render_key(pk));
        }
    }
    if let Some(a) = &r.attesttoken {
        out.push_str("ATTESTTOKEN\n");
        push_kv(&mut out, "message type", &a.msg_type.to_string());
        push_kv(&mut out, "device UUID", &a.uuid);
        push_kv(
            &mut out,
            "device type",
            &format!("{} ({})", a.device_type, a.device_type_name),
        );
        push_kv(&mut out, "firmware UUID", &a.fw_uuid);
        push_kv(&mut out, "nonce", &a.nonce);
        render_cose(&mut out, &a.cose);
    }
    if let Some(c) = &r.csr {
        render_csr(&mut out, c);
    }
    for (i, c) in r.certificates.iter().enumerate() {
        out.push_str(&format!("Certificate {} (SHA-256 {})\n", i + 1, c.sha256));
        push_kv(&mut out, "subject", &c.subject);
        push_kv(&mut out, "issuer", &c.issuer);
        push_kv(&mut out, "serial", &c.serial);
        push_kv(&mut out, "not before", &c.not_before);
        push_kv(&mut out, "not after", &c.not_after);
        push_kv(&mut out, "key", &render_key(&c.key));
        push_kv(
            &mut out,
            "signature",
            &format!(
                "{}{}",
                c.signature_algorithm,
                match c.signature_ok {
                    Some(true) => ", verifies",
                    Some(false) => ", DOES NOT VERIFY",
                    None => ", issuer not given",
                }
            ),
        );
        for e in &c.extensions {
            push_kv(
                &mut out,
                "extension",
                &format!(
                    "{}{}: {}",
                    e.name,
                    if e.critical { " (critical)" } else { "" },
                    e.value
                ),
            );
        }
    }
    if let Some(q) = &r.requests {
        out.push_str(&format!(
            "Requests file ({}): {} requests, {} pass\n",
            q.format, q.total, q.ok
        ));
        for (code, n) in &q.rejected {
            push_kv(&mut out, code, &n.to_string());
        }
        for it in q.items.iter().filter(|i| i.verdict != "ok") {
            out.push_str(&format!(
                "  line {}: {}{}{}\n",
                it.line,
                it.verdict,
                it.device_uuid
                    .as_deref()
                    .map(|u| format!(" [{u}]"))
                    .unwrap_or_default(),
                it.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default()
            ));
        }
    }
    match &r.code {
        None => out.push_str(&format!("verdict: OK, {}\n", r.detail)),
        Some(c) => out.push_str(&format!("verdict: REJECTED ({c}): {}\n", r.detail)),
    }
    escape_lines(&out)
}

/// `text` with every control character (and bidi override) inside its lines made visible
/// ([`crate::util::term_escape`]); the LF line ends stay. Everything `render_text` prints
/// passes here, so nothing from the input (a CN, a requests-file cell, a detail quoting
/// them) can move the cursor, retitle the window or hide text on a terminal.
fn escape_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&crate::util::term_escape(line));
    }
    out
}
