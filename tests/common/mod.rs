//! Helpers shared by the integration tests: the binary under test, external tool lookup
//! (`$NRFCA_VENV`, `NRFCA_REQUIRE_TOOLS`), openssl, a test CA encrypted to an age identity,
//! files, and what the bench tests need around the simulated modems.
#![allow(dead_code)] // each test binary uses a subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

// ------------------------------------------------------------------------ constants

/// The security tag the tests provision (nRF Cloud's default, 16842753).
pub const TAG: u32 = 16842753;

/// The `%KEYGEN` reply in the seed tutorial (a real nRF9160 on mfw 1.3.x).
pub const SEED: &str = seed_from_reply(include_str!("../data/seed-keygen-reply.txt"));

/// The reply line of the seed as the modem printed it (`tests/data/seed-keygen-reply.txt`).
#[allow(dead_code)]
pub const SEED_REPLY: &str = include_str!("../data/seed-keygen-reply.txt");

/// `%KEYGEN: "<s>"\n` → `<s>`, at compile time (a malformed fixture fails the build).
const fn seed_from_reply(reply: &str) -> &str {
    let b = reply.as_bytes();
    let prefix = b"%KEYGEN: \"";
    let mut i = 0;
    while i < prefix.len() {
        assert!(b[i] == prefix[i], "fixture is not a %KEYGEN reply");
        i += 1;
    }
    let mut end = b.len();
    while end > 0 && (b[end - 1] == b'\n' || b[end - 1] == b'\r') {
        end -= 1;
    }
    assert!(b[end - 1] == b'"', "fixture does not end with a quote");
    let (_, rest) = b.split_at(prefix.len());
    let (inner, _) = rest.split_at(end - 1 - prefix.len());
    match std::str::from_utf8(inner) {
        Ok(s) => s,
        Err(_) => panic!("fixture is not UTF-8"),
    }
}

// ------------------------------------------------------------------------ the binary

/// Path of the `nrfca` binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_nrfca");

/// `nrfca` with no `NRFCA_PASSPHRASE` from the caller's environment and stdin closed.
pub fn bin() -> Command {
    let mut c = Command::new(BIN);
    c.env_remove("NRFCA_PASSPHRASE").stdin(Stdio::null());
    c
}

/// `nrfca` with the environment and stdin of the test process, as they are.
pub fn bin_plain() -> Command {
    Command::new(BIN)
}

/// Run to completion, capturing stdout and stderr.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run nrfca")
}

/// A process's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ------------------------------------------------------------------------ external tools

/// `NRFCA_REQUIRE_TOOLS=1` (CI): a missing external tool fails the test instead of skipping
/// the check that needs it.
pub fn require_tools() -> bool {
    std::env::var("NRFCA_REQUIRE_TOOLS").is_ok_and(|v| v == "1")
}

/// The venv of the external oracles: `$NRFCA_VENV`, else the one `.ci/run` makes in this
/// repository (`target/ci-venv`).
pub fn venv() -> PathBuf {
    match std::env::var("NRFCA_VENV") {
        Ok(v) => PathBuf::from(v),
        Err(_) => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join("ci-venv"),
    }
}

/// An external tool is missing (`what` says which and where): fails the test under
/// `NRFCA_REQUIRE_TOOLS=1`, else notes it (stderr, and one line in
/// `target/skipped-external-checks.txt`, so a plain `cargo test` run can be checked for
/// skips afterwards) and the caller skips the check.
pub fn tool_missing(what: &str) {
    assert!(
        !require_tools(),
        "{what} (NRFCA_REQUIRE_TOOLS=1): run .ci/run once, which installs the external checkers (openssl, age, pkilint, nrfcredstore) into target/ci-venv"
    );
    eprintln!("note: {what}; skipping that check (run .ci/run once to install it)");
    let log = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("skipped-external-checks.txt");
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        use std::io::Write;
        let _ = writeln!(f, "{what}");
    }
}

/// `$NRFCA_VENV/bin/<name>` if it exists; None (see [`tool_missing`]) otherwise.
pub fn venv_tool(name: &str) -> Option<PathBuf> {
    let dir = venv().join("bin");
    let p = dir.join(name);
    if p.exists() {
        return Some(p);
    }
    tool_missing(&format!("{name} not found in {}", dir.display()));
    None
}

/// `Some("openssl")` if `openssl version` runs on PATH; None (see [`tool_missing`]) otherwise.
pub fn openssl() -> Option<&'static str> {
    let ok = Command::new("openssl")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        return Some("openssl");
    }
    tool_missing("openssl not on PATH");
    None
}

/// Whether openssl is there (see [`openssl`]).
pub fn have_openssl() -> bool {
    openssl().is_some()
}

/// `openssl ARGS` in `dir`; panics with openssl's stderr if it fails.
pub fn openssl_in(dir: &Path, args: &[&str]) {
    let o = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A new P-256 key (SEC1 PEM) made by openssl at `dir/file`.
pub fn openssl_p256_key(dir: &Path, file: &str) {
    openssl_in(
        dir,
        &[
            "ecparam",
            "-name",
            "prime256v1",
            "-genkey",
            "-noout",
            "-out",
            file,
        ],
    );
}

// ------------------------------------------------------------------------ files and a CA

/// Write `bytes` to `path` with mode 0600.
pub fn write_secret(path: &Path, bytes: &[u8]) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A fresh age X25519 identity written to `path` (0600); returns its recipient string.
pub fn age_identity(path: &Path) -> String {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    write_secret(path, id.to_string().expose_secret().as_bytes());
    id.to_public().to_string()
}

/// `nrfca ca init --ca-dir CA_DIR --subject SUBJECT --recipient R EXTRA...`, R a fresh age
/// identity written to `identity` (0600): a CA that unlocks without scrypt. Panics if
/// `ca init` fails.
pub fn ca_init_age(ca_dir: &Path, identity: &Path, subject: &str, extra: &[&str]) {
    let r = age_identity(identity);
    let o = run(bin()
        .args(["ca", "init", "--ca-dir"])
        .arg(ca_dir)
        .args(["--subject", subject, "--recipient", &r])
        .args(extra));
    assert!(o.status.success(), "ca init: {}", stderr(&o));
}

/// Copy the tree `from` into `to` (created if missing).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// `needle` (non-empty) occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// SHA-256 in upper-case hex, as the modem lists it.
pub fn sha_upper(b: &[u8]) -> String {
    hex::encode_upper(nrfca::internal::crypto::sha256(b))
}

/// The public key (uncompressed point) of the first certificate in `pem`.
pub fn cert_public_key(pem: &str) -> Vec<u8> {
    use der::Decode;
    let block = nrfca::internal::util::pem_blocks(pem)
        .into_iter()
        .find(|b| b.label == "CERTIFICATE")
        .expect("a certificate");
    let cert = x509_cert::Certificate::from_der(&block.decode().unwrap()).unwrap();
    cert.tbs_certificate
        .subject_public_key_info
        .subject_public_key
        .as_bytes()
        .unwrap()
        .to_vec()
}

// ------------------------------------------------------------------------ bench and modems

/// An AT command that changes a modem: credential write or delete, KEYGEN, CFUN write.
pub fn changes_modem(cmd: &str) -> bool {
    let u = cmd.to_ascii_uppercase();
    u.starts_with("AT%CMNG=0")
        || u.starts_with("AT%CMNG=3")
        || u.starts_with("AT%KEYGEN")
        || u.starts_with("AT+CFUN=")
}

/// Port settings with timeouts short enough for tests: `default_ms` for plain commands,
/// `sync_ms` for the sync probe, `reconnect_s` to wait for a modem to come back; writes and
/// CFUN 1.5 s, KEYGEN 2 s (the `slow` fault, 10x latency + 250 ms, stays inside them).
#[cfg(feature = "bench")]
pub fn port_settings(
    default_ms: u64,
    sync_ms: u64,
    reconnect_s: u64,
) -> nrfca::bench::PortSettings {
    use std::time::Duration;
    let mut s = nrfca::bench::PortSettings::default();
    s.timeouts.default = Duration::from_millis(default_ms);
    s.timeouts.write = Duration::from_millis(1500);
    s.timeouts.cfun = Duration::from_millis(1500);
    s.timeouts.keygen = Duration::from_millis(2000);
    s.timeouts.sync = Duration::from_millis(sync_ms);
    s.reconnect_wait = Duration::from_secs(reconnect_s);
    s
}

/// `count` simulated modems at test latency, linked as `dir/modems/modemN`, and their ports.
#[cfg(feature = "bench")]
pub fn test_modems(dir: &Path, count: usize) -> (nrfca::sim::Simulator, Vec<String>) {
    use nrfca::sim::{Latency, SimConfig, Simulator};
    let sim = Simulator::start(SimConfig {
        count,
        latency: Latency::Test,
        link_dir: Some(dir.join("modems")),
        ..SimConfig::default()
    })
    .expect("simulator starts");
    let ports = port_names(&sim);
    (sim, ports)
}

/// The simulator's serial ports as strings (what `--port` takes).
#[cfg(feature = "bench")]
pub fn port_names(sim: &nrfca::sim::Simulator) -> Vec<String> {
    sim.ports()
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

// ------------------------------------------------------------------ a CA under test

/// A CA made by `nrfca ca init` in a temporary directory, its key encrypted to an age X25519
/// identity (no slow scrypt), and the commands the officer runs on it.
pub struct AgeCa {
    _tmp: tempfile::TempDir,
    /// The temporary directory (inputs and bundles go here).
    pub root: PathBuf,
    /// The CA directory (`root/ca`).
    pub dir: PathBuf,
    /// The age identity the key is encrypted to.
    pub identity: PathBuf,
}

impl AgeCa {
    /// `nrfca ca init --subject SUBJECT --operator tester` to a fresh age identity.
    pub fn new(subject: &str) -> AgeCa {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let identity = root.join("officer.agekey");
        let dir = root.join("ca");
        ca_init_age(&dir, &identity, subject, &["--operator", "tester"]);
        AgeCa {
            _tmp: tmp,
            root,
            dir,
            identity,
        }
    }

    /// A path in the temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// `nrfca ARGS... --ca-dir D` (no key).
    pub fn nrfca(&self, args: &[&str]) -> Output {
        bin_plain()
            .args(args)
            .arg("--ca-dir")
            .arg(&self.dir)
            .output()
            .unwrap()
    }

    /// `nrfca ARGS... --ca-dir D --identity I --operator tester` (a command that unlocks).
    pub fn with_key(&self, args: &[&str]) -> Output {
        bin_plain()
            .args(args)
            .arg("--ca-dir")
            .arg(&self.dir)
            .arg("--identity")
            .arg(&self.identity)
            .args(["--operator", "tester"])
            .output()
            .unwrap()
    }

    /// `nrfca sign --ca-dir D --identity I --operator tester --out OUT ARGS... INPUTS...`
    pub fn sign(&self, out: &str, args: &[&str], inputs: &[&Path]) -> Output {
        bin_plain()
            .arg("sign")
            .arg("--ca-dir")
            .arg(&self.dir)
            .arg("--identity")
            .arg(&self.identity)
            .args(["--operator", "tester", "--out"])
            .arg(self.path(out))
            .args(args)
            .args(inputs)
            .output()
            .unwrap()
    }

    /// `ca.db`, opened directly (to count or to tamper).
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.dir.join("ca.db")).unwrap()
    }

    /// The one integer `sql` selects from `ca.db`.
    pub fn count(&self, sql: &str) -> i64 {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    /// `nrfca audit verify --ca-dir D` must pass.
    pub fn audit_verify(&self) {
        let out = self.nrfca(&["audit", "verify"]);
        assert!(
            out.status.success(),
            "audit verify failed: {}",
            explain(&out)
        );
    }
}

/// A command's exit code, stdout and stderr, for assertion messages.
pub fn explain(o: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ------------------------------------------------------------------------------- SoftHSM2

/// Where Debian, Ubuntu and Fedora install the SoftHSM2 module (or `$NRFCA_SOFTHSM2_MODULE`).
pub fn softhsm_module() -> Option<PathBuf> {
    if let Ok(m) = std::env::var("NRFCA_SOFTHSM2_MODULE") {
        return Some(PathBuf::from(m));
    }
    [
        "/usr/lib/softhsm/libsofthsm2.so",
        "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
        "/usr/lib64/pkcs11/libsofthsm2.so",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}
