//! Transcript tests of what the operator reads (House rule 7): `tests/cmd/*.trycmd` are
//! terminal sessions — the commands as a user types them and the output they see, stdout and
//! stderr together, with `[..]` for what changes from run to run (hashes, serials, times) and
//! `...` for any number of lines. Every command has its `--help` (help.trycmd), a success and
//! a failure under test.
//!
//! The cases are copied into a temporary directory, where each `<case>.in/` directory becomes
//! that case's working directory, seeded by [`seed`] with what cannot live in git: a test age
//! identity with mode 0600, requests files, and for the technician three simulated modems
//! (`nrfca::sim`, fixed seed) linked as `modems/modem0..2`. The commands of one case run in
//! order in that directory, so later commands see what earlier ones wrote.
//!
//! To refresh the expected text after a deliberate change of wording:
//! `NRFCA_CLI_OVERWRITE=1 cargo test --test cli` writes the actual output back into
//! `tests/cmd/` (keeping the `[..]` that still match); review the diff before committing.

use std::path::{Path, PathBuf};

mod common;
use common::{copy_dir, require_tools, venv, write_secret};

/// A test-only age identity (public key below). It protects nothing but the throw-away CAs
/// these transcripts create.
const TEST_IDENTITY: &str = "# test-only identity for tests/cmd transcripts; protects nothing\n\
# public key: age1m28u4mecn29s6nl2l3t3hpwj9hnsnvwy276e9vmsp9e9yga6vdds980e49\n\
AGE-SECRET-KEY-1RS4SLY65LAL4YMWAS6Q29KLVF6FTAN49J7H9C2V0J6QXE0PCJXVSG87RAM\n";

/// A program on PATH, for the transcripts that tamper with files (`sed`).
fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// What the cases need in their `.in/` directories. Returns the cases to skip (a missing
/// external tool) and the simulator, which must outlive the run.
fn seed(cmd: &Path) -> (Vec<PathBuf>, nrfca::sim::Simulator) {
    let mut skip = Vec::new();
    // Every case but help.trycmd runs in its own `.in/` directory with the test identity.
    for e in std::fs::read_dir(cmd).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "trycmd") && !p.ends_with("help.trycmd") {
            let dir = p.with_extension("in");
            std::fs::create_dir_all(&dir).unwrap();
            write_secret(&dir.join("officer.agekey"), TEST_IDENTITY.as_bytes());
        }
    }

    // Passphrase: the right passphrase with a trailing space (whitespace counts), and the
    // right one as written, both mode 0600.
    write_secret(
        &cmd.join("passphrase.in/trailing-space.txt"),
        b"correct-horse \n",
    );
    write_secret(&cmd.join("passphrase.in/pw.txt"), b"correct-horse\n");

    // Officer: a plain-text requests file with one request that is not a KEYGEN string.
    std::fs::write(
        cmd.join("officer.in/pasted.txt"),
        "# pasted from a terminal\nthis-is-not-a-keygen-string\n",
    )
    .unwrap();

    // ca import: a CA made by Nordic's create_ca_cert, under fixed file names.
    let nordic = cmd.join("ca-import.in");
    let create = venv().join("bin/create_ca_cert");
    let made = create.is_file()
        && std::process::Command::new(&create)
            .args([
                "-c",
                "NO",
                "-o",
                "Acme",
                "--cn",
                "Acme Fleet CA",
                "-f",
                "acme-",
                "-p",
            ])
            .arg(&nordic)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
    let mut found = 0;
    if made {
        for e in std::fs::read_dir(&nordic).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            for (suffix, fixed) in [("_ca.pem", "acme_ca.pem"), ("_prv.pem", "acme_prv.pem")] {
                if name.starts_with("acme-") && name.ends_with(suffix) {
                    std::fs::rename(&p, nordic.join(fixed)).unwrap();
                    found += 1;
                }
            }
        }
    }
    if found != 2 {
        assert!(
            !require_tools(),
            "create_ca_cert is missing from {} (NRFCA_REQUIRE_TOOLS=1)",
            venv().display()
        );
        eprintln!(
            "note: create_ca_cert not found in {}: skipping tests/cmd/ca-import.trycmd",
            venv().display()
        );
        skip.push(cmd.join("ca-import.trycmd"));
    }

    // Technician: three simulated modems with stable links and identities.
    let sim = nrfca::sim::Simulator::start(nrfca::sim::SimConfig {
        count: 3,
        link_dir: Some(cmd.join("technician.in/modems")),
        seed: Some(2025),
        latency: nrfca::sim::Latency::Test,
        ..nrfca::sim::SimConfig::default()
    })
    .expect("start the simulated modems");
    (skip, sim)
}

#[test]
fn transcripts() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cmd");
    let tmp = tempfile::tempdir().unwrap();
    let cmd = tmp.path().join("cmd");
    copy_dir(&src, &cmd);
    let (skip, sim) = seed(&cmd);

    // Nothing from the developer's shell may change what the transcripts show.
    for var in [
        "NRFCA_PASSPHRASE",
        "NRFCA_DEMO_VERBOSE",
        "COLUMNS",
        "CLICOLOR_FORCE",
    ] {
        std::env::remove_var(var);
    }
    let overwrite = std::env::var("NRFCA_CLI_OVERWRITE").is_ok_and(|v| v == "1");
    if overwrite {
        std::env::set_var("TRYCMD", "overwrite");
    }

    let cases = trycmd::TestCases::new();
    cases
        .register_bin("nrfca", PathBuf::from(common::BIN))
        .env("NO_COLOR", "1")
        .env("USER", "tester")
        .env("TERM", "dumb")
        .case(cmd.join("*.trycmd"));
    match which("sed") {
        Some(sed) => {
            cases.register_bin("sed", sed);
        }
        None => {
            eprintln!("note: no sed on PATH: skipping the tampering transcripts");
            cases.skip(cmd.join("auditor.trycmd"));
            cases.skip(cmd.join("technician.trycmd"));
        }
    }
    for s in &skip {
        cases.skip(s);
    }
    // Run now, while the simulated modems are up (TestCases would otherwise run on drop).
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cases.run()));
    drop(sim);
    if overwrite {
        for e in std::fs::read_dir(&cmd).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "trycmd") {
                std::fs::copy(&p, src.join(p.file_name().unwrap())).unwrap();
            }
        }
    }
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// Issue 10 item 12: a closed stdout or stderr (`nrfca ca init … 2>&1 | true`) is not a
/// panic. Rust ignores SIGPIPE, so `eprintln!` on a pipe whose reader is gone panicked
/// (exit 101) after the CA had been created. Each command here runs with pipes whose read
/// ends are closed before it starts (so every write gets EPIPE, no race with the reader):
/// it finishes its work and exits with its own code (0 done, 2 could not run), never 101.
/// On 845129f: `ca init` and the failing command exit 101, `audit show --csv` exits 2.
#[test]
fn closed_stdout_and_stderr_end_cleanly_with_the_real_exit_code() {
    use std::process::{Command, Stdio};

    /// A pipe whose read end is already closed: every write to it fails with EPIPE.
    fn closed_pipe() -> Stdio {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        Stdio::from(writer)
    }
    /// Run `nrfca ARGS` with stdout and/or stderr closed pipes (the other one captured).
    fn run_closed(args: &[&std::ffi::OsStr], stdout: bool, stderr: bool) -> (i32, String) {
        let mut c = Command::new(common::BIN);
        c.env_remove("NRFCA_PASSPHRASE")
            .stdin(Stdio::null())
            .args(args)
            .stdout(if stdout {
                closed_pipe()
            } else {
                Stdio::piped()
            })
            .stderr(if stderr {
                closed_pipe()
            } else {
                Stdio::piped()
            });
        let o = c.output().unwrap();
        let text = format!(
            "status {:?}\nstdout: {}\nstderr: {}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.code().unwrap_or(-1), text)
    }
    let os = |s: &'static str| std::ffi::OsStr::new(s);

    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let identity = tmp.path().join("officer.agekey");
    let recipient = common::age_identity(&identity);
    let init: Vec<&std::ffi::OsStr> = vec![
        os("ca"),
        os("init"),
        os("--ca-dir"),
        ca.as_os_str(),
        os("--subject"),
        os("CN=Pipe Test CA,O=nrfca tests"),
        os("--recipient"),
        std::ffi::OsStr::new(&recipient),
        os("--operator"),
        os("tester"),
    ];
    // ca init with both streams closed: the CA is created, exit 0.
    let (code, text) = run_closed(&init, true, true);
    assert_eq!(code, 0, "{text}");
    for f in ["ca.pem", "ca.key.age", "ca.db"] {
        assert!(ca.join(f).is_file(), "{f} missing: {text}");
    }
    // The same again fails (the CA exists): exit 2 stays 2 with stderr closed.
    let (code, text) = run_closed(&init, true, true);
    assert_eq!(code, 2, "{text}");
    let (code, text) = run_closed(&init, true, false);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("error:"), "{text}");

    // audit show, as a table, JSON and CSV, with stdout closed (and stderr closed too).
    for format in [None, Some("--json"), Some("--csv")] {
        let mut args = vec![os("audit"), os("show"), os("--ca-dir"), ca.as_os_str()];
        args.extend(format.map(os));
        for stderr in [false, true] {
            let (code, text) = run_closed(&args, true, stderr);
            assert_eq!(
                code, 0,
                "audit show {format:?} stderr closed {stderr}: {text}"
            );
        }
    }
    // audit verify with both closed: still 0 (the log is intact).
    let (code, text) = run_closed(
        &[os("audit"), os("verify"), os("--ca-dir"), ca.as_os_str()],
        true,
        true,
    );
    assert_eq!(code, 0, "{text}");
}

#[test]
fn issue16_man_page_examples_are_not_justified() {
    // clap_mangen emitted the examples as filled text, so `man` justified them and spread the
    // `# comments`; they are now wrapped in .nf/.fi and render as written.
    let o = common::run(common::bin().args(["man", "demo"]));
    assert_eq!(o.status.code(), Some(0));
    let roff = String::from_utf8_lossy(&o.stdout).into_owned();
    let at = roff.find("Example:\n.nf\n").expect("examples unfilled");
    assert!(roff[at..].contains("\n.fi\n"), "{roff}");
    if let Ok(mut nroff) = std::process::Command::new("nroff")
        .arg("-man")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        use std::io::Write;
        nroff
            .stdin
            .take()
            .unwrap()
            .write_all(roff.as_bytes())
            .unwrap();
        let out = nroff.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("nrfca demo                       # 4 modems"),
            "{text}"
        );
    }
}

#[test]
fn completions_cover_every_command() {
    // meta.trycmd pins only the script's frame; here every visible command and a flag of
    // each must be completable, in each shell clap_complete supports.
    let commands = [
        ("nrfca__subcmd__ca", "init"),
        ("nrfca__subcmd__sign", "--ca-dir"),
        ("nrfca__subcmd__audit", "verify"),
        ("nrfca__subcmd__inspect", "--json"),
        ("nrfca__subcmd__bench", "export"),
        ("nrfca__subcmd__sim", "--count"),
        ("nrfca__subcmd__demo", "--devices"),
    ];
    let o = common::run(common::bin().args(["completions", "bash"]));
    assert_eq!(o.status.code(), Some(0));
    let bash = String::from_utf8_lossy(&o.stdout).into_owned();
    for (func, word) in commands {
        let at = bash
            .find(&format!("{func})"))
            .unwrap_or_else(|| panic!("bash completion has no case for {func}"));
        let case = &bash[at..];
        let end = case.find(";;").unwrap_or(case.len());
        assert!(case[..end].contains(word), "{func} does not offer {word}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = common::run(common::bin().args(["completions", shell]));
        assert_eq!(o.status.code(), Some(0), "{shell}");
        let text = String::from_utf8_lossy(&o.stdout);
        for word in ["ca-dir", "verify", "export", "devices"] {
            assert!(text.contains(word), "{shell} completion lacks {word}");
        }
    }
}
