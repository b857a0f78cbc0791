//! Simulated modems on real pseudo-terminals: the AT conversation over a serial port, every
//! fault, the state file, the `nrfca sim` command, and Nordic's unchanged Python tools
//! (`nrfcredstore`, `device_credentials_installer`) against the simulator.
#![cfg(feature = "bench")]

use nrfca::sim::{Fault, FaultSpec, Latency, Profile, SimConfig, Simulator};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{have_openssl, openssl_in, sha_upper, TAG};

const CA: &str = include_str!("../keys/AmazonRootCA1.pem");
const COAP_CA: &str = include_str!("../keys/nrf-cloud-coap-ca.pem");

// ---------------------------------------------------------------------------------------
// helpers

fn sim(count: usize, f: impl FnOnce(&mut SimConfig)) -> Simulator {
    let mut cfg = SimConfig {
        count,
        latency: Latency::None,
        ..SimConfig::default()
    };
    f(&mut cfg);
    Simulator::start(cfg).expect("simulator starts")
}

/// A host on the serial port: writes commands, reads quote-aware lines up to the final
/// result, like a bench client would.
struct Client {
    port: serialport::TTYPort,
    buf: Vec<u8>,
}

#[derive(Debug)]
struct Reply {
    /// Non-final, non-empty lines (information, URCs, noise), raw bytes.
    lines: Vec<Vec<u8>>,
    /// The final result line, if one came before the timeout.
    fin: Option<String>,
    /// Error reading the port (a disconnect).
    broken: bool,
    elapsed: Duration,
}

impl Reply {
    fn text(&self) -> Vec<String> {
        self.lines
            .iter()
            .map(|l| String::from_utf8_lossy(l).into_owned())
            .collect()
    }
    fn fin(&self) -> &str {
        self.fin.as_deref().unwrap_or("<none>")
    }
}

fn is_final(line: &[u8]) -> bool {
    line == b"OK"
        || line == b"ERROR"
        || line.starts_with(b"+CME ERROR:")
        || line.starts_with(b"+CMS ERROR:")
}

impl Client {
    /// The port as it is: the boot banner, if any, comes as lines of the first reply.
    fn open_raw(path: &Path) -> Client {
        let port = serialport::new(path.to_string_lossy(), 115200)
            .timeout(Duration::from_millis(20))
            .open_native()
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        Client {
            port,
            buf: Vec::new(),
        }
    }

    fn open(path: &Path) -> Client {
        let mut c = Client::open_raw(path);
        // Drop the boot banner, whenever it comes: the simulated modem prints it before it
        // reads any input, so everything up to the final result of a first `AT` is banner.
        // (Not a timed drain: under load the banner could come after any fixed wait.)
        c.send("AT");
        let r = c.reply(Duration::from_secs(10));
        assert_eq!(
            r.fin.as_deref(),
            Some("OK"),
            "first AT on {}: {r:?}",
            path.display()
        );
        c.buf.clear();
        c
    }

    /// Read what is there (waits up to the port timeout). Err on a broken port.
    fn read_some(&mut self) -> std::io::Result<usize> {
        let mut b = [0u8; 4096];
        match self.port.read(&mut b) {
            Ok(0) => Err(std::io::Error::new(std::io::ErrorKind::BrokenPipe, "eof")),
            Ok(n) => {
                self.buf.extend_from_slice(&b[..n]);
                Ok(n)
            }
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.port.write_all(bytes).expect("write to port");
        self.port.flush().ok();
    }

    fn send(&mut self, cmd: &str) {
        let mut b = cmd.as_bytes().to_vec();
        b.extend_from_slice(b"\r\n");
        self.send_raw(&b);
    }

    /// Read lines until a final result or `timeout`.
    fn reply(&mut self, timeout: Duration) -> Reply {
        let start = Instant::now();
        let mut lines = Vec::new();
        let mut broken = false;
        loop {
            // Take complete lines (quote-aware) out of the buffer.
            let mut in_q = false;
            let mut line_start = 0usize;
            let mut consumed = 0usize;
            let mut fin = None;
            for i in 0..self.buf.len() {
                match self.buf[i] {
                    b'"' => in_q = !in_q,
                    b'\n' if !in_q => {
                        let mut l = self.buf[line_start..i].to_vec();
                        if l.last() == Some(&b'\r') {
                            l.pop();
                        }
                        line_start = i + 1;
                        consumed = i + 1;
                        if l.is_empty() {
                            continue;
                        }
                        if is_final(&l) {
                            fin = Some(String::from_utf8_lossy(&l).into_owned());
                            break;
                        }
                        lines.push(l);
                    }
                    _ => {}
                }
            }
            self.buf.drain(..consumed);
            if fin.is_some() || broken || start.elapsed() >= timeout {
                return Reply {
                    lines,
                    fin,
                    broken,
                    elapsed: start.elapsed(),
                };
            }
            if self.read_some().is_err() {
                broken = true;
            }
        }
    }

    fn cmd(&mut self, cmd: &str) -> Reply {
        self.send(cmd);
        let r = self.reply(Duration::from_secs(5));
        assert!(r.fin.is_some(), "no final result for {cmd}: {r:?}");
        r
    }

    fn ok(&mut self, cmd: &str) -> Vec<String> {
        let r = self.cmd(cmd);
        assert_eq!(r.fin(), "OK", "{cmd}: {r:?}");
        r.text()
    }
}

fn sim_identity_of_another_modem() -> [u8; 65] {
    let other = sim(1, |_| {});
    other.identity_public_key(0)
}

fn keygen_string(line: &str) -> &str {
    line.strip_prefix("%KEYGEN: \"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a %KEYGEN line: {line}"))
}

// ---------------------------------------------------------------------------------------
// the conversation

#[test]
fn provisioning_conversation_over_a_pty() {
    let sim = sim(1, |_| {});
    let port = sim.ports()[0].clone();
    assert!(port.starts_with("/dev/pts"), "{}", port.display());
    let mut c = Client::open(&port);
    c.ok("AT+CMEE=1");
    c.ok("AT+CFUN=4");
    let imei = c.ok("AT+CGSN");
    let snap = sim.snapshot(0);
    assert_eq!(imei, vec![snap.imei.clone()]);
    assert!(nrfca::internal::util::is_imei_luhn(&snap.imei));
    assert_eq!(c.ok("AT+CGSN=1"), vec![format!("+CGSN: \"{}\"", snap.imei)]);
    assert_eq!(c.ok("AT+CGMR"), vec!["mfw_nrf9160_1.3.7"]);
    assert_eq!(c.ok("AT+CGMM"), vec!["nRF9160-SICA"]);

    // KEYGEN: a real request that passes the signer's checks, with the modem's UUID.
    let kg = c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    assert_eq!(kg.len(), 1);
    let v = nrfca::keygen::check(keygen_string(&kg[0]), &Default::default())
        .expect("KEYGEN passes keygen::check");
    assert_eq!(v.uuid, snap.uuid);
    assert_eq!(v.sec_tag, TAG);
    let snap = sim.snapshot(0);
    let key = snap.credential(TAG, 2).expect("key stored as type 2");
    assert_eq!(key.public_key, Some(v.public_key));
    assert_eq!(key.content, None, "private keys are not exposed");
    // The COSE is signed by the simulated identity key the simulator reports.
    let idk = sim.identity_public_key(0);
    let halves = nrfca::keygen::decode_halves(keygen_string(&kg[0])).unwrap();
    let cose = nrfca::internal::keygen::cose::parse_sign1(halves.cose.as_deref().unwrap()).unwrap();
    assert!(nrfca::internal::keygen::cose::verify_sign1(
        &idk, &cose, None
    ));
    let other = sim_identity_of_another_modem();
    assert!(!nrfca::internal::keygen::cose::verify_sign1(
        &other, &cose, None
    ));

    // Write a PEM with LF line ends inline; the list SHA is the SHA-256 of the exact bytes.
    c.ok(&format!("AT%CMNG=0,{TAG},0,\"{CA}\""));
    let sha = sha_upper(CA.as_bytes());
    assert_eq!(
        c.ok(&format!("AT%CMNG=1,{TAG},0")),
        vec![format!("%CMNG: {TAG},0,\"{sha}\"")]
    );
    // Read back byte-exact (the reply spans lines inside the quotes).
    assert_eq!(
        c.ok(&format!("AT%CMNG=2,{TAG},0")),
        vec![format!("%CMNG: {TAG},0,\"{sha}\",\"{CA}\"")]
    );
    let listed = c.ok(&format!("AT%CMNG=1,{TAG}"));
    assert_eq!(listed.len(), 2, "{listed:?}");
    let snap = sim.snapshot(0);
    let ca = snap.credential(TAG, 0).unwrap();
    assert_eq!(ca.content.as_deref(), Some(CA));
    assert_eq!(ca.sha256_upper, sha);
    // The private key cannot be read.
    assert_eq!(
        c.cmd(&format!("AT%CMNG=2,{TAG},2")).fin(),
        "+CME ERROR: 514"
    );
    // Delete.
    c.ok(&format!("AT%CMNG=3,{TAG},0"));
    assert!(c.ok(&format!("AT%CMNG=1,{TAG},0")).is_empty());
    assert_eq!(
        c.cmd(&format!("AT%CMNG=3,{TAG},0")).fin(),
        "+CME ERROR: 513"
    );
    assert!(sim.snapshot(0).credential(TAG, 0).is_none());
    // The attestation token carries the same UUID.
    let t = c.ok("AT%ATTESTTOKEN=\"00112233445566778899aabbccddeeff\"");
    let token = t[0]
        .strip_prefix("%ATTESTTOKEN: \"")
        .and_then(|s| s.strip_suffix('"'))
        .unwrap();
    let halves = nrfca::keygen::decode_halves(token).unwrap();
    let msg = nrfca::internal::keygen::cose::parse_attest_payload(&halves.first).unwrap();
    assert_eq!(nrfca::internal::util::uuid_string(&msg.uuid), snap.uuid);
    assert_eq!(
        msg.nonce,
        [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff
        ]
    );
    assert_eq!(msg.device_type, 3);
    let cose = nrfca::internal::keygen::cose::parse_sign1(halves.cose.as_deref().unwrap()).unwrap();
    assert!(nrfca::internal::keygen::cose::verify_sign1(
        &idk,
        &cose,
        Some(&halves.first)
    ));
    assert!(sim
        .snapshot(0)
        .commands
        .iter()
        .any(|c| c.starts_with("AT%ATTESTTOKEN=\"")));
    sim.shutdown().unwrap();
}

#[test]
fn cme_518_while_lte_is_on_and_plain_error_without_cmee() {
    let sim = sim(1, |c| c.boot_cfun = 1);
    let mut c = Client::open(&sim.ports()[0]);
    assert_eq!(c.ok("AT+CFUN?"), vec!["+CFUN: 1"]);
    assert_eq!(c.cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(), "ERROR");
    c.ok("AT+CMEE=1");
    assert_eq!(
        c.cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(),
        "+CME ERROR: 518"
    );
    assert_eq!(
        c.cmd(&format!("AT%CMNG=0,{TAG},0,\"{CA}\"")).fin(),
        "+CME ERROR: 518"
    );
    assert_eq!(
        c.cmd(&format!("AT%CMNG=3,{TAG},0")).fin(),
        "+CME ERROR: 518"
    );
    // Listing works in any mode.
    assert_eq!(c.ok("AT%CMNG=1").len(), 3);
    c.ok("AT+CFUN=4");
    c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    assert_eq!(
        c.cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(),
        "+CME ERROR: 519"
    );
}

#[test]
fn command_over_4095_bytes_is_refused() {
    let sim = sim(1, |_| {});
    let mut c = Client::open(&sim.ports()[0]);
    c.ok("AT+CMEE=1");
    c.ok("AT+CFUN=4");
    // 4095 bytes from AT to the last byte before the terminator: accepted.
    let prefix = format!("AT%CMNG=0,{TAG},3,\"");
    let fits = format!("{prefix}{}\"", "A".repeat(4095 - prefix.len() - 1));
    assert_eq!(fits.len(), 4095);
    c.ok(&fits);
    // One byte more: ERROR, nothing stored, and the next command works.
    let long = format!("{prefix}{}\"", "B".repeat(4095 - prefix.len()));
    assert_eq!(long.len(), 4096);
    assert_eq!(c.cmd(&long).fin(), "ERROR");
    let stored = sim.snapshot(0);
    assert_eq!(
        stored.credential(TAG, 3).unwrap().sha256_upper,
        sha_upper(&fits.as_bytes()[prefix.len()..fits.len() - 1])
    );
    let huge = format!("{prefix}{}\r\n\"", "C\r\n".repeat(3000));
    assert_eq!(c.cmd(&huge).fin(), "ERROR");
    assert_eq!(c.ok("AT+CGMI"), vec!["Nordic Semiconductor ASA"]);
}

#[test]
fn quoted_string_spans_lines_and_writes() {
    let sim = sim(1, |_| {});
    let mut c = Client::open(&sim.ports()[0]);
    c.ok("AT+CFUN=4");
    // CR LF inside quotes is content, even when it arrives in separate writes.
    let crlf = CA.replace('\n', "\r\n");
    let (a, b) = crlf.split_at(300);
    c.send_raw(format!("AT%CMNG=0,{TAG},0,\"{a}").as_bytes());
    std::thread::sleep(Duration::from_millis(30));
    for chunk in b.as_bytes().chunks(7) {
        c.send_raw(chunk);
    }
    c.send_raw(b"\"\r");
    let r = c.reply(Duration::from_secs(5));
    assert_eq!(r.fin(), "OK", "{r:?}");
    let snap = sim.snapshot(0);
    assert_eq!(
        snap.credential(TAG, 0).unwrap().content.as_deref(),
        Some(crlf.as_str())
    );
    // CR-only and LF-only terminators work too.
    c.send_raw(b"AT+CGMI\r");
    assert_eq!(c.reply(Duration::from_secs(5)).fin(), "OK");
    c.send_raw(b"AT+CGMI\n");
    assert_eq!(c.reply(Duration::from_secs(5)).fin(), "OK");
    // Lowercase is accepted; a shell-style command is not.
    assert_eq!(c.cmd("at+cgsn").fin(), "OK");
    assert_eq!(c.cmd("at AT+CGSN").fin(), "ERROR");
    // BS/DEL edit the line being typed.
    c.send_raw(b"AT+CGMX\x08I\r\n");
    assert_eq!(c.reply(Duration::from_secs(5)).fin(), "OK");
}

#[test]
fn nrf91x1_and_slm_profiles() {
    let s1 = sim(1, |c| c.profile = Profile::Nrf91x1);
    let mut c = Client::open(&s1.ports()[0]);
    c.ok("AT+CMEE=1");
    c.ok("AT+CFUN=4");
    let uuid = c.ok("AT%DEVICEUUID");
    assert_eq!(uuid, vec![format!("%DEVICEUUID: {}", s1.snapshot(0).uuid)]);
    let flat = CA.replace('\n', " ");
    assert_eq!(
        c.cmd(&format!("AT%CMNG=0,{TAG},0,\"{flat}\"")).fin(),
        "+CME ERROR: 527"
    );
    c.ok(&format!("AT%CMNG=0,{TAG},0,\"{CA}{COAP_CA}\""));
    drop(s1);

    // SLM: `Ready` banner, blank-line framing.
    let s2 = sim(1, |c| c.profile = Profile::Slm);
    let mut port = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&s2.ports()[0])
        .unwrap();
    let mut got = Vec::new();
    let mut b = [0u8; 256];
    let read_until = |port: &mut std::fs::File, got: &mut Vec<u8>, want: &[u8], b: &mut [u8]| {
        let end = Instant::now() + Duration::from_secs(5);
        while !got.ends_with(want) && Instant::now() < end {
            let n = port.read(b).unwrap();
            got.extend_from_slice(&b[..n]);
        }
    };
    read_until(&mut port, &mut got, b"Ready\r\n", &mut b);
    assert_eq!(got, b"Ready\r\n");
    got.clear();
    port.write_all(b"AT+CGMI\r\n").unwrap();
    read_until(&mut port, &mut got, b"\r\nOK\r\n", &mut b);
    assert_eq!(got, b"\r\nNordic Semiconductor ASA\r\n\r\nOK\r\n");
    got.clear();
    port.write_all(b"AT%CMNG=2,1,0\r\n").unwrap();
    read_until(&mut port, &mut got, b"\r\n", &mut b);
    assert_eq!(got, b"\r\nERROR\r\n");
}

// ---------------------------------------------------------------------------------------
// faults

#[test]
fn fault_garbage_and_urcs_surround_replies() {
    let sim = sim(2, |c| {
        c.fault_specs = vec![
            FaultSpec::on(0, Fault::Garbage),
            FaultSpec::on(1, Fault::Urcs),
        ];
    });
    let ports = sim.ports();
    let mut g = Client::open(&ports[0]);
    let r = g.cmd("AT+CGSN");
    assert_eq!(r.fin(), "OK");
    assert_eq!(r.lines.len(), 2, "{r:?}");
    assert!(
        r.lines[0]
            .iter()
            .any(|b| !b.is_ascii_graphic() && *b != b' '),
        "noise line first: {r:?}"
    );
    assert_eq!(r.lines[1], sim.snapshot(0).imei.as_bytes());

    let mut u = Client::open(&ports[1]);
    let r = u.cmd("AT%CMNG=1");
    assert_eq!(r.fin(), "OK");
    let t = r.text();
    assert!(t.iter().any(|l| l == "+CSCON: 1"), "{t:?}");
    assert!(t.iter().any(|l| l == "+CEREG: 0"), "{t:?}");
    assert!(t.iter().any(|l| l.starts_with("%XMODEMSLEEP: ")), "{t:?}");
    assert!(t.iter().any(|l| l.contains("<inf>")), "{t:?}");
    assert_eq!(t.iter().filter(|l| l.starts_with("%CMNG: ")).count(), 3);
    // Switched off at run time.
    sim.set_faults(1, vec![]);
    // Whatever was already on its way comes before the final result of a plain `AT`.
    u.ok("AT");
    u.buf.clear();
    let r = u.cmd("AT+CGSN");
    assert_eq!(r.lines.len(), 1, "{r:?}");
}

#[test]
fn fault_slow_and_first_command_fails() {
    let sim = sim(1, |c| {
        c.faults = vec![Fault::Slow, Fault::FirstCommandFails]
    });
    // Raw: a first `AT` to skip the banner would be the command that fails.
    let mut c = Client::open_raw(&sim.ports()[0]);
    let r = c.cmd("AT+CMEE=1");
    assert_eq!(r.fin(), "ERROR", "first command after boot fails");
    assert!(r.elapsed >= Duration::from_millis(250), "{:?}", r.elapsed);
    assert_eq!(c.cmd("AT+CMEE=1").fin(), "OK", "then the modem works");
    // Switched off at run time: the modem answers again (no upper bound on the time: a
    // loaded machine can take any time, and the slow fault's floor is what is checked).
    sim.set_faults(0, vec![]);
    assert_eq!(c.cmd("AT").fin(), "OK");
}

#[test]
fn fault_lost_final_is_one_shot_and_keeps_the_key() {
    let sim = sim(3, |c| {
        c.fault_specs = vec![FaultSpec::on(1, Fault::LostFinal)]
    });
    let ports = sim.ports();
    // Modems 0 and 2 are unaffected.
    for i in [0, 2] {
        let mut c = Client::open(&ports[i]);
        c.ok("AT+CFUN=4");
        c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    }
    let mut c = Client::open(&ports[1]);
    c.ok("AT+CMEE=1");
    c.ok("AT+CFUN=4");
    c.send(&format!("AT%KEYGEN={TAG},2,0"));
    let r = c.reply(Duration::from_millis(400));
    assert_eq!(r.fin, None, "final result lost: {r:?}");
    assert_eq!(r.lines.len(), 1);
    // The key exists although the host never saw OK.
    let listed = c.ok(&format!("AT%CMNG=1,{TAG},2"));
    assert_eq!(listed.len(), 1);
    assert!(sim.snapshot(1).credential(TAG, 2).is_some());
    // One-shot: the re-run after clearing the slot succeeds.
    c.ok(&format!("AT%CMNG=3,{TAG},2"));
    c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    // Re-armed with a trigger command of our choice.
    sim.set_fault_specs(1, vec![FaultSpec::all(Fault::LostFinal).when("+CGSN")]);
    c.send("AT+CGSN");
    assert_eq!(c.reply(Duration::from_millis(300)).fin, None);
    c.ok("AT+CGSN");
}

#[test]
fn fault_disconnect_mid_reply_then_replug() {
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(2, |c| {
        c.link_dir = Some(dir.path().to_path_buf());
        c.fault_specs = vec!["disconnect:%KEYGEN@0".parse().unwrap()];
        c.latency = Latency::Test;
    });
    let ports = sim.ports();
    assert_eq!(ports[0], dir.path().join("modem0"));
    let old_pty = sim.pty_paths()[0].clone();
    let mut c = Client::open(&ports[0]);
    c.ok("AT+CFUN=4");
    c.send(&format!("AT%KEYGEN={TAG},2,0"));
    let r = c.reply(Duration::from_secs(3));
    assert!(r.broken, "port breaks: {r:?}");
    // The link never points at the dead pty again (gone while unplugged, then the new one;
    // the client still holds the old pty, so its number cannot be reused yet).
    assert_ne!(std::fs::read_link(&ports[0]).ok(), Some(old_pty));
    assert_eq!(r.fin, None);
    assert!(!c.buf.is_empty() || !r.lines.is_empty() || r.broken);
    drop(c);
    // Comes back (same link, new pty), rebooted, with the key that was generated.
    let end = Instant::now() + Duration::from_secs(5);
    while sim.snapshot(0).boots < 2 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    let snap = sim.snapshot(0);
    assert_eq!(snap.boots, 2);
    assert_eq!(snap.disconnects, 1);
    assert_eq!(snap.cfun, 0, "CFUN back to its boot value");
    assert!(snap.credential(TAG, 2).is_some());
    assert_eq!(std::fs::read_link(&ports[0]).unwrap(), sim.pty_paths()[0]);
    let mut c = Client::open(&ports[0]);
    c.ok("AT+CFUN=4");
    assert_eq!(c.ok(&format!("AT%CMNG=1,{TAG},2")).len(), 1);
    c.ok(&format!("AT%CMNG=3,{TAG},2"));
    c.ok(&format!("AT%KEYGEN={TAG},2,0")); // one-shot: no second disconnect
                                           // The other modem never noticed.
    assert_eq!(sim.snapshot(1).disconnects, 0);
    sim.shutdown().unwrap();
    assert!(
        !dir.path().join("modem0").exists(),
        "links removed on shutdown"
    );
}

#[test]
fn fault_cme_on_write_storage_full_keygen_fail() {
    let sim = sim(3, |c| {
        c.fault_specs = vec![
            FaultSpec::on(0, Fault::CmeOnWrite),
            FaultSpec::on(1, Fault::StorageFull),
            FaultSpec::on(2, Fault::KeygenFail),
        ]
    });
    let ports = sim.ports();
    let mut cs: Vec<Client> = ports.iter().map(|p| Client::open(p)).collect();
    for c in cs.iter_mut() {
        c.ok("AT+CMEE=1");
        c.ok("AT+CFUN=4");
    }
    let write = format!("AT%CMNG=0,{TAG},0,\"{CA}\"");
    assert_eq!(cs[0].cmd(&write).fin(), "+CME ERROR: 528");
    assert_eq!(cs[0].cmd(&write).fin(), "+CME ERROR: 528", "standing");
    cs[0].ok(&format!("AT%KEYGEN={TAG},2,0"));
    assert_eq!(cs[1].cmd(&write).fin(), "+CME ERROR: 515");
    assert_eq!(
        cs[1].cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(),
        "+CME ERROR: 515"
    );
    cs[2].ok(&write);
    assert_eq!(
        cs[2].cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(),
        "+CME ERROR: 523"
    );
    assert!(sim.snapshot(2).credential(TAG, 2).is_none());
    cs[2].ok(&format!("AT%KEYGEN={TAG},2,0"));
    // Clearing the standing faults lets the re-run succeed.
    sim.set_faults(0, vec![]);
    sim.set_faults(1, vec![]);
    cs[0].ok(&write);
    cs[1].ok(&write);
    for i in 0..3 {
        assert_eq!(
            sim.snapshot(i).credential(TAG, 0).unwrap().sha256_upper,
            sha_upper(CA.as_bytes())
        );
    }
}

#[test]
fn fault_probability_is_reproducible() {
    let run = || {
        let sim = sim(1, |c| {
            c.seed = Some(7);
            c.fault_probability = Some(0.5);
            c.fault_specs = vec!["lost-final:+CGSN".parse().unwrap()];
        });
        let mut c = Client::open(&sim.ports()[0]);
        let mut pattern = Vec::new();
        for _ in 0..12 {
            // A marker command after each probe tells a lost final from a slow one.
            c.send("AT+CGSN");
            c.send("AT+CGMI");
            let r = c.reply(Duration::from_secs(5));
            let lost = r.text().iter().any(|l| l == "Nordic Semiconductor ASA");
            if !lost {
                assert_eq!(c.reply(Duration::from_secs(5)).fin(), "OK");
            }
            pattern.push(lost);
        }
        (pattern, sim.snapshot(0).imei)
    };
    let (a, imei_a) = run();
    let (b, imei_b) = run();
    assert_eq!(a, b);
    assert_eq!(imei_a, imei_b, "same seed, same modem");
    assert!(a.iter().any(|x| *x) && a.iter().any(|x| !*x), "{a:?}");
}

// ---------------------------------------------------------------------------------------
// state file

#[test]
fn state_file_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("sim.json");
    let s1 = sim(2, |c| c.state_file = Some(state.clone()));
    let mut c = Client::open(&s1.ports()[1]);
    c.ok("AT+CFUN=4");
    let kg = c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    c.ok(&format!("AT%CMNG=0,{TAG},1,\"{CA}\""));
    c.ok("AT%CMNG=0,7,3,\"00112233\"");
    drop(c);
    let before: Vec<_> = (0..2).map(|i| s1.snapshot(i)).collect();
    s1.shutdown().unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(text.contains("SIMULATED"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&state).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // Same file, more modems: the first two come back identical, a third is new.
    let s2 = sim(3, |c| c.state_file = Some(state.clone()));
    for (i, b) in before.iter().enumerate() {
        let a = s2.snapshot(i);
        assert_eq!(a.imei, b.imei);
        assert_eq!(a.uuid, b.uuid);
        assert_eq!(a.identity_public_key, b.identity_public_key);
        assert_eq!(a.credentials, b.credentials);
    }
    assert_ne!(s2.snapshot(2).uuid, before[0].uuid);
    let mut c = Client::open(&s2.ports()[1]);
    c.ok("AT+CFUN=4");
    assert_eq!(c.cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(), "ERROR");
    let listed = c.ok(&format!("AT%CMNG=1,{TAG}"));
    assert_eq!(listed.len(), 2);
    // A KEYGEN after the restart is signed by the same identity: same UUID in the COSE.
    c.ok(&format!("AT%CMNG=3,{TAG},2"));
    let kg2 = c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    let u1 = nrfca::keygen::check(keygen_string(&kg[0]), &Default::default()).unwrap();
    let u2 = nrfca::keygen::check(keygen_string(&kg2[0]), &Default::default()).unwrap();
    assert_eq!(u1.uuid, u2.uuid);
    drop(c);
    s2.shutdown().unwrap();

    // Fewer modems: the others are kept in the file.
    let s3 = sim(1, |c| c.state_file = Some(state.clone()));
    s3.shutdown().unwrap();
    let s4 = sim(3, |c| c.state_file = Some(state.clone()));
    assert_eq!(s4.snapshot(1).uuid, before[1].uuid);
    drop(s4);

    std::fs::write(&state, "{ not json").unwrap();
    let err = Simulator::start(SimConfig {
        state_file: Some(state.clone()),
        ..SimConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("sim.json"), "{err}");
}

// ---------------------------------------------------------------------------------------
// the command

fn read_lines(child: &mut std::process::Child, n: usize) -> Vec<String> {
    let mut out = child.stdout.take().unwrap();
    let mut text = String::new();
    let mut b = [0u8; 1024];
    let end = Instant::now() + Duration::from_secs(20);
    while text.lines().count() < n && Instant::now() < end {
        let k = out.read(&mut b).unwrap();
        if k == 0 {
            break;
        }
        text.push_str(&String::from_utf8_lossy(&b[..k]));
    }
    text.lines().map(str::to_string).collect()
}

#[test]
fn sim_command_prints_ports_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("links");
    let state = dir.path().join("state.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nrfca"))
        .args(["sim", "--count", "2", "--print-identity", "--seed", "3"])
        .arg("--link-dir")
        .arg(&links)
        .arg("--state")
        .arg(&state)
        .args(["--fault", "keygen-fail@1", "--latency", "none"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = read_lines(&mut child, 2);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let fields: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    assert_eq!(fields[0][0], links.join("modem0").to_str().unwrap());
    assert_eq!(fields[1][0], links.join("modem1").to_str().unwrap());
    assert_eq!(fields[0][3].len(), 130);
    let mut c0 = Client::open(Path::new(fields[0][0]));
    c0.ok("AT+CFUN=4");
    assert_eq!(c0.ok("AT+CGSN"), vec![fields[0][1].to_string()]);
    let kg = c0.ok(&format!("AT%KEYGEN={TAG},2,0"));
    let v = nrfca::keygen::check(keygen_string(&kg[0]), &Default::default()).unwrap();
    assert_eq!(v.uuid, fields[0][2]);
    let mut c1 = Client::open(Path::new(fields[1][0]));
    c1.ok("AT+CMEE=1");
    c1.ok("AT+CFUN=4");
    assert_eq!(
        c1.cmd(&format!("AT%KEYGEN={TAG},2,0")).fin(),
        "+CME ERROR: 523"
    );
    drop((c0, c1));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!links.join("modem0").exists());
    let saved = std::fs::read_to_string(&state).unwrap();
    assert!(saved.contains(fields[0][2]), "state has the modem");
    assert!(saved.contains("\"keygen\""), "state has the generated key");

    // Bad usage exits 2 with a message.
    let out = Command::new(env!("CARGO_BIN_EXE_nrfca"))
        .args(["sim", "--count", "1", "--fault", "melt-down"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown fault"));
    let out = Command::new(env!("CARGO_BIN_EXE_nrfca"))
        .args(["sim", "--count", "2", "--fault", "garbage@5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------
// Nordic's own tools, unchanged (SPEC §7)

/// The venv (see [`common::venv`]) if it has Nordic's tools and python.
fn venv() -> Option<PathBuf> {
    let dir = common::venv();
    let have = dir.join("bin/nrfcredstore").exists()
        && dir.join("bin/device_credentials_installer").exists()
        && dir.join("bin/python").exists();
    if have {
        return Some(dir);
    }
    common::tool_missing(&format!(
        "nrfcredstore / device_credentials_installer / python not found in {}/bin",
        dir.display()
    ));
    None
}

/// Run one of Nordic's tools through tests/interop/run_nordic.py (which only adds the ptys
/// to pyserial's port list).
fn nordic(venv: &Path, ports: &[PathBuf], cwd: &Path, args: &[&str]) -> std::process::Output {
    let joined = ports
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(":");
    let out = Command::new(venv.join("bin/python"))
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/interop/run_nordic.py"
        ))
        .args(args)
        .env("NRFCA_SIM_PORTS", joined)
        .current_dir(cwd)
        .output()
        .unwrap();
    eprintln!(
        "{args:?} -> {:?}\n--- stdout\n{}\n--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn nrfcredstore_unchanged_against_the_simulator() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let sim = sim(1, |c| c.latency = Latency::Test);
    let ports = sim.pty_paths();
    let port = ports[0].to_str().unwrap();

    let out = nordic(&venv, &ports, dir.path(), &["nrfcredstore", port, "imei"]);
    assert_eq!(out.status.code(), Some(0));
    let snap = sim.snapshot(0);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("IMEI: {}", snap.imei)));

    // generate: KEYGEN with attributes; the DER CSR it saves is the modem's.
    let out = nordic(
        &venv,
        &ports,
        dir.path(),
        &[
            "nrfcredstore",
            port,
            "generate",
            &TAG.to_string(),
            "csr.der",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let der = std::fs::read(dir.path().join("csr.der")).unwrap();
    let key = sim
        .snapshot(0)
        .credential(TAG, 2)
        .unwrap()
        .public_key
        .unwrap();
    assert!(
        der.windows(65).any(|w| w == key),
        "the CSR carries the stored key"
    );

    // write (file rstrip()ed, LF endings) and list: the SHA is that of the exact bytes.
    std::fs::write(dir.path().join("ca.pem"), CA).unwrap();
    let out = nordic(
        &venv,
        &ports,
        dir.path(),
        &[
            "nrfcredstore",
            port,
            "write",
            "42",
            "ROOT_CA_CERT",
            "ca.pem",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let sent = CA.trim_end();
    let snap = sim.snapshot(0);
    let stored = snap.credential(42, 0).unwrap();
    assert_eq!(stored.content.as_deref(), Some(sent));
    assert_eq!(stored.sha256_upper, sha_upper(sent.as_bytes()));
    assert!(snap.commands.iter().any(|c| c == "AT+CMEE=1"));

    let out = nordic(&venv, &ports, dir.path(), &["nrfcredstore", port, "list"]);
    assert_eq!(out.status.code(), Some(0));
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(listing.contains(&stored.sha256_upper), "{listing}");
    assert!(listing.contains("CLIENT_KEY"), "{listing}");
    assert!(listing.contains("NORDIC_PUB_KEY"), "{listing}");

    let out = nordic(
        &venv,
        &ports,
        dir.path(),
        &["nrfcredstore", port, "delete", "42", "ROOT_CA_CERT"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(sim.snapshot(0).credential(42, 0).is_none());

    let out = nordic(
        &venv,
        &ports,
        dir.path(),
        &["nrfcredstore", port, "attoken"],
    );
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Attestation token: "));
}

#[test]
fn device_credentials_installer_unchanged_against_the_simulator() {
    let Some(venv) = venv() else { return };
    if !have_openssl() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::openssl_p256_key(d, "ca.key");
    openssl_in(
        d,
        &[
            "req",
            "-new",
            "-x509",
            "-key",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "30",
            "-subj",
            "/CN=nrfca interop test CA",
        ],
    );
    // Two modems; the installer provisions modem 1 only, with a key already in the slot
    // (so -d has something to delete).
    let sim = sim(2, |c| c.latency = Latency::Test);
    let ports = sim.pty_paths();
    {
        let mut c = Client::open(&ports[1]);
        c.ok("AT+CFUN=4");
        c.ok(&format!("AT%KEYGEN={TAG},2,0"));
    }
    let old_key = sim.snapshot(1).credential(TAG, 2).unwrap().public_key;
    let before = sim.snapshot(1).commands.len();
    let port = ports[1].to_str().unwrap();
    let out = nordic(
        &venv,
        &ports,
        d,
        &[
            "device_credentials_installer",
            "--port",
            port,
            "--ca",
            "ca.pem",
            "--ca-key",
            "ca.key",
            "-d",
            "--verify",
            "--coap",
            "--csv",
            "onboard.csv",
            "-P",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Credential verification: PASS"), "{log}");
    assert!(log.contains("COSE digest matches payload"), "{log}");

    // What it wrote is what the modem holds, byte for byte (CRLF, as the installer sends).
    let snap = sim.snapshot(1);
    let csv = std::fs::read_to_string(d.join("onboard.csv")).unwrap();
    assert!(csv.starts_with(&format!("{},", snap.uuid)), "{csv}");
    let cert_pem = &csv[csv.find("-----BEGIN CERTIFICATE-----").unwrap()
        ..csv.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len()];
    let cert_crlf = format!("{}\r\n", cert_pem.replace('\r', "").replace('\n', "\r\n"));
    let client = snap.credential(TAG, 1).expect("client certificate stored");
    assert_eq!(client.content.as_deref(), Some(cert_crlf.as_str()));
    assert_eq!(client.sha256_upper, sha_upper(cert_crlf.as_bytes()));
    let ca = snap.credential(TAG, 0).expect("CA bundle stored");
    let ca_text = ca.content.as_deref().unwrap();
    assert_eq!(
        ca_text.matches("-----BEGIN CERTIFICATE-----").count(),
        2,
        "--coap bundle"
    );
    assert!(ca_text.contains("\r\n") && !ca_text.replace("\r\n", "").contains('\n'));
    // The certificate is for the key generated in this run, not the old one.
    let key = snap.credential(TAG, 2).unwrap().public_key.unwrap();
    assert_ne!(Some(key), old_key);
    use der::DecodePem;
    let cert = x509_cert::Certificate::from_pem(cert_pem.as_bytes()).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .raw_bytes();
    assert_eq!(spki, key);
    // The other modem was not touched.
    assert!(sim.snapshot(0).credentials.is_empty());
    // Its exact conversation (nordic-tools.md §5.3).
    let cmds = &snap.commands[before..];
    let pos = |c: &str| {
        cmds.iter()
            .position(|x| x.starts_with(c))
            .unwrap_or(usize::MAX)
    };
    assert_eq!(
        cmds.first().map(String::as_str),
        Some("at AT+CGSN"),
        "{cmds:?}"
    );
    assert!(pos("AT+CFUN=4") < pos("AT%KEYGEN="), "{cmds:?}");
    assert!(pos(&format!("AT%CMNG=3,{TAG},2")) < pos("AT%KEYGEN="));
    assert!(pos("AT%KEYGEN=") < pos(&format!("AT%CMNG=0,{TAG},0,")));
    assert!(pos(&format!("AT%CMNG=0,{TAG},1,")) < pos(&format!("AT%CMNG=1,{TAG},2")));
}

#[test]
fn issue16_a_port_held_by_another_program_is_busy_with_its_holder() {
    // A port another program holds (exclusive open, as nrfca and most terminals do) is
    // `port-busy`, naming the holder where Linux tells; it used to be `port-not-found … does
    // not exist`.
    use nrfca::bench::transport::{self, OpenErrorKind, SerialSettings};
    let s = sim(1, |_| {});
    let port = s.ports()[0].display().to_string();
    let holder = transport::open(&port, &SerialSettings::default()).expect("first open");
    let e = transport::open(&port, &SerialSettings::default()).expect_err("second open");
    assert_eq!(e.kind, OpenErrorKind::Busy, "{e}");
    let text = e.to_string();
    assert!(text.contains("in use by another program"), "{text}");
    assert!(
        text.contains("held by") && text.contains("this process"),
        "{text}"
    );
    assert!(!text.contains("does not exist"), "{text}");
    // From the CLI, a device line with the stable code.
    let dir = tempfile::tempdir().unwrap();
    let o = common::run(
        common::bin()
            .args(["bench", "export", "--port", &port, "--out"])
            .arg(dir.path().join("requests.csv"))
            .arg("--state")
            .arg(dir.path().join("state")),
    );
    assert_eq!(o.status.code(), Some(1), "{}", common::stderr(&o));
    let err = common::stderr(&o);
    assert!(err.contains("port-busy"), "{err}");
    assert!(err.contains("held by"), "{err}");
    drop(holder);
}

#[test]
fn issue16_a_second_sim_on_the_same_link_dir_is_refused() {
    // It used to take over the first simulator's modem0… links and delete them on exit.
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("links");
    let first = sim(2, |c| c.link_dir = Some(links.clone()));
    let before: Vec<_> = (0..2)
        .map(|i| std::fs::read_link(links.join(format!("modem{i}"))).unwrap())
        .collect();
    let e = Simulator::start(SimConfig {
        count: 1,
        latency: Latency::None,
        link_dir: Some(links.clone()),
        ..SimConfig::default()
    })
    .expect_err("a second simulator on the same --link-dir");
    let text = e.to_string();
    assert!(
        text.contains("in use by another running nrfca sim"),
        "{text}"
    );
    assert!(
        text.contains(&format!("pid {}", std::process::id())),
        "{text}"
    );
    // The first one's links are untouched, and it still answers.
    let after: Vec<_> = (0..2)
        .map(|i| std::fs::read_link(links.join(format!("modem{i}"))).unwrap())
        .collect();
    assert_eq!(before, after);
    let mut c = Client::open(&links.join("modem0"));
    c.send("AT");
    assert_eq!(c.reply(Duration::from_secs(5)).fin.as_deref(), Some("OK"));
    drop(c);
    // Once it stops, the directory is free again.
    first.shutdown().unwrap();
    let again = sim(1, |c| c.link_dir = Some(links.clone()));
    assert!(links.join("modem0").exists());
    again.shutdown().unwrap();
}

#[test]
fn issue16_readme_sim_recipe_with_state_survives_a_restart() {
    // The README's recipe, as written: `nrfca sim --count 3 --link-dir D --state sim.json`,
    // export, Ctrl-C, the same command again: the same modems come back, so a second export
    // finds every device already exported (same key) and writes no new row.
    let dir = tempfile::tempdir().unwrap();
    let links = dir.path().join("modems");
    let state = dir.path().join("sim.json");
    let requests = dir.path().join("requests.csv");
    let bench_state = dir.path().join("bench");
    let start = || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nrfca"))
            .args(["sim", "--count", "3", "--latency", "none", "--link-dir"])
            .arg(&links)
            .arg("--state")
            .arg(&state)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let ports = read_lines(&mut child, 3);
        assert_eq!(ports.len(), 3, "{ports:?}");
        (child, ports)
    };
    let export = |ports: &[String]| {
        let mut c = common::bin();
        c.args(["bench", "export", "--out"])
            .arg(&requests)
            .arg("--state")
            .arg(&bench_state);
        for p in ports {
            c.args(["--port", p]);
        }
        common::run(&mut c)
    };
    let stop = |mut child: std::process::Child| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0));
    };
    let (child, ports) = start();
    let o = export(&ports);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let rows = std::fs::read_to_string(&requests).unwrap().lines().count();
    assert_eq!(rows, 1 + 3);
    stop(child);
    let (child, ports) = start();
    let o = export(&ports);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    assert_eq!(
        std::fs::read_to_string(&requests).unwrap().lines().count(),
        rows,
        "the restarted modems were exported again: {}",
        common::stderr(&o)
    );
    stop(child);
}

#[test]
fn issue16_ctrl_c_during_export_says_what_was_interrupted_and_a_rerun_finishes() {
    // It used to die silently with frozen spinner lines. Now: a message naming what was
    // interrupted and that the same command finishes it; exit 2; and it does finish it.
    let s = sim(2, |c| c.latency = Latency::Realistic);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("requests.csv");
    let export = || {
        let mut c = common::bin();
        c.args(["bench", "export", "--out"])
            .arg(&out)
            .arg("--state")
            .arg(dir.path().join("state"));
        for p in s.ports() {
            c.arg("--port").arg(p);
        }
        c
    };
    let child = export()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once both modems are mid-KEYGEN (realistic KEYGENs take 1-3 s), whatever the
    // machine's load: wait for the command to reach them, not for a fixed time.
    let deadline = Instant::now() + Duration::from_secs(60);
    let keygen_sent = |i: usize| {
        s.snapshot(i)
            .commands
            .iter()
            .any(|c| c.starts_with("AT%KEYGEN"))
    };
    while !(keygen_sent(0) && keygen_sent(1)) {
        assert!(Instant::now() < deadline, "export never reached KEYGEN");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("interrupted by SIGINT during bench export"),
        "{err}"
    );
    assert!(err.contains("Run the same command again"), "{err}");
    // The modems finish the command they were in (a KEYGEN takes up to 3 s) before a new
    // session starts, as a technician's re-run would.
    let deadline = Instant::now() + Duration::from_secs(60);
    while s.snapshot(0).busy || s.snapshot(1).busy {
        assert!(
            Instant::now() < deadline,
            "the modems never finished their KEYGEN"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let o = common::run(&mut export());
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let rows = std::fs::read_to_string(&out).unwrap().lines().count();
    assert_eq!(rows, 1 + 2, "{}", common::stderr(&o));
}
