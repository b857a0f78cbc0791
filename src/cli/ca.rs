//! `nrfca ca init | import | show | verify-key | protect`.

use super::common::{
    operator, print_json, print_stdout, resolve_new_passphrase, resolve_protect_passphrase,
    with_spinner, CliResult, Outcome, UnlockArgs,
};
use clap::{Args, Subcommand};
use nrfca::signer::ca::{self, CaInfo, InitOptions};
use nrfca::signer::protect;
use nrfca::signer::secret::Protection;
use std::path::PathBuf;

/// CA subcommands.
#[derive(Debug, Subcommand)]
pub enum CaCmd {
    /// Create a new P-256 CA in --ca-dir: ca.pem, ca.key.age (mode 0600), ca.db.
    #[command(
        after_help = "Example:\n  nrfca ca init --ca-dir /media/ca --subject \"CN=Acme Device CA,O=Acme,C=NO\"\n  nrfca ca init --ca-dir ca --subject \"CN=Acme Device CA\" --recipient age1... --recipient age1..."
    )]
    Init(InitArgs),
    /// Adopt a CA made by Nordic's create_ca_cert (plaintext key), encrypting its key.
    #[command(
        after_help = "Example:\n  nrfca ca import --ca-dir /media/ca --cert ./0x3ebf..._ca.pem --key ./0x3ebf..._prv.pem\n\nAfterwards destroy the plaintext key file (shred -u PRV.pem)."
    )]
    Import(ImportArgs),
    /// Show subject, fingerprint, validity, key protection, counts.
    #[command(
        after_help = "No secret is needed. The table goes to stdout.\n\nExample:\n  nrfca ca show --ca-dir /media/ca\n  nrfca ca show --ca-dir /media/ca --json | jq -r .fingerprint"
    )]
    Show(ShowArgs),
    /// Unlock the CA key and check it matches ca.pem (test a passphrase, identity or backup);
    /// records key-unlocked or unlock-failed in the audit log.
    #[command(
        after_help = "Example:\n  nrfca ca verify-key --ca-dir /media/ca\n  nrfca ca verify-key --ca-dir /media/ca --identity ~/officer.agekey"
    )]
    VerifyKey(VerifyKeyArgs),
    /// Change how the CA key is protected (new passphrase or new age recipients): proves the
    /// new ca.key.age opens to the same key, replaces it atomically, keeps the old one as
    /// ca.key.age.retired-<time>; audited.
    #[command(
        after_help = "The current key is unlocked as for `sign` (--passphrase-file, NRFCA_PASSPHRASE, prompt, or --identity).\nThe new passphrase comes from --new-passphrase-file, else NRFCA_NEW_PASSPHRASE, else is asked twice on the terminal.\nFor recipients, --new-identity (the identity file of at least one new recipient) proves the new file opens.\nAfterwards remove the retired file (shred -u) once the old secret is no longer needed; `ca show` warns until then.\n\nExample:\n  nrfca ca protect --ca-dir /media/ca --passphrase-file old.pw --new-passphrase-file new.pw\n  nrfca ca protect --ca-dir /media/ca --new-recipient age1...new1 --new-recipient age1...new2 --new-identity new1.agekey"
    )]
    Protect(ProtectKeyArgs),
    // --- evidence (SPEC §10) ---
    /// Trust a bench: sign accepts requests files it signed (requests.csv.sig); audited.
    #[command(
        after_help = "Check the key's fingerprint with the technician (`nrfca bench init` printed it) before trusting it.\nOnce any bench is trusted, sign refuses unsigned inputs unless given --unsigned.\n\nExample:\n  nrfca ca trust-bench --ca-dir /media/ca --name line-3 --key line-3-bench.pem"
    )]
    TrustBench(TrustBenchArgs),
    /// Stop trusting a bench; audited.
    #[command(after_help = "Example:\n  nrfca ca distrust-bench --ca-dir /media/ca --name line-3")]
    DistrustBench(DistrustBenchArgs),
}

/// Arguments of `ca trust-bench`.
#[derive(Debug, Args)]
pub struct TrustBenchArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The bench's name (as given to `bench init --name`).
    #[arg(long)]
    pub name: String,
    /// The bench's public key (bench.pem).
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

/// Arguments of `ca distrust-bench`.
#[derive(Debug, Args)]
pub struct DistrustBenchArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The bench's name.
    #[arg(long)]
    pub name: String,
    #[command(flatten)]
    pub unlock: UnlockArgs,
}

/// Arguments of `ca protect`.
#[derive(Debug, Args)]
pub struct ProtectKeyArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// File whose first line is the new passphrase (else $NRFCA_NEW_PASSPHRASE, else asked
    /// twice on the terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "new_recipient")]
    pub new_passphrase_file: Option<PathBuf>,
    /// Encrypt the key to this age X25519 public key (age1...) instead of a passphrase;
    /// repeat for several holders.
    #[arg(long, value_name = "AGE_PUBKEY")]
    pub new_recipient: Vec<String>,
    /// Identity file of one of the new recipients (repeatable); the new file must open with
    /// each before the old one is replaced. Required with --new-recipient.
    #[arg(long, value_name = "FILE", requires = "new_recipient")]
    pub new_identity: Vec<PathBuf>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `ca verify-key`.
#[derive(Debug, Args)]
pub struct VerifyKeyArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// How the new key file is protected (shared by init and import).
#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// Encrypt the CA key to this age X25519 public key (age1...) instead of a passphrase;
    /// repeat for several holders (any one can unlock with --identity).
    #[arg(long, value_name = "AGE_PUBKEY")]
    pub recipient: Vec<String>,
    /// File whose first line is the new passphrase (else $NRFCA_PASSPHRASE, else asked twice
    /// on the terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "recipient")]
    pub passphrase_file: Option<PathBuf>,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ProtectArgs {
    fn protection(&self) -> Result<Protection, Box<dyn std::error::Error>> {
        if !self.recipient.is_empty() {
            return Ok(Protection::Recipients(self.recipient.clone()));
        }
        Ok(Protection::Passphrase(resolve_new_passphrase(
            self.passphrase_file.as_deref(),
        )?))
    }
}

/// Arguments of `ca init`.
#[derive(Debug, Args)]
pub struct InitArgs {
    /// CA directory to create (must not hold ca.pem, ca.key.age or ca.db).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Subject, most specific first: "CN=Acme Device CA,O=Acme,C=NO" (CN, O, OU, L, ST, C).
    #[arg(long, value_name = "DN")]
    pub subject: String,
    /// Validity of the CA certificate in days.
    #[arg(long, default_value_t = ca::DEFAULT_DAYS)]
    pub days: u32,
    #[command(flatten)]
    pub protect: ProtectArgs,
}

/// Arguments of `ca import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// CA directory to create (must not hold ca.pem, ca.key.age or ca.db).
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// The CA certificate (PEM), e.g. create_ca_cert's <serial>_ca.pem.
    #[arg(long, value_name = "PEM")]
    pub cert: PathBuf,
    /// The plaintext private key (PEM, PKCS#8 or SEC1), e.g. <serial>_prv.pem.
    #[arg(long, value_name = "PEM")]
    pub key: PathBuf,
    #[command(flatten)]
    pub protect: ProtectArgs,
}

/// Arguments of `ca show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Run a CA subcommand.
pub fn run(cmd: CaCmd) -> CliResult {
    match cmd {
        CaCmd::Init(a) => {
            let protection = a.protect.protection()?;
            let opts = InitOptions {
                subject: a.subject,
                days: a.days,
                protection,
                operator: operator(a.protect.operator.clone()),
            };
            let info = with_spinner(encrypt_message(&opts.protection), || {
                ca::init(&a.ca_dir, &opts)
            })?;
            if a.protect.json {
                print_json(&info)?;
            } else {
                say!("CA created in {}", a.ca_dir.display());
                say_raw!("{}", render(&info));
                say!("Next:");
                say!(
                    "  1. back up {} on two offline media; keep its {} apart from it",
                    a.ca_dir.join(ca::CA_KEY).display(),
                    secret_name(&opts.protection)
                );
                say!(
                    "  2. give {} to the bench (`nrfca bench import --trust ca.pem`); write down its sha256 above",
                    a.ca_dir.join(ca::CA_PEM).display()
                );
                say!(
                    "  3. sign requests: nrfca sign --ca-dir {} --out BUNDLE requests.csv",
                    a.ca_dir.display()
                );
            }
            Ok(Outcome::Done)
        }
        CaCmd::Import(a) => {
            let protection = a.protect.protection()?;
            let info = with_spinner(encrypt_message(&protection), || {
                ca::import(
                    &a.ca_dir,
                    &a.cert,
                    &a.key,
                    &protection,
                    &operator(a.protect.operator.clone()),
                )
            })?;
            if a.protect.json {
                print_json(&info)?;
            } else {
                say!("CA imported into {}", a.ca_dir.display());
                say_raw!("{}", render(&info));
                say!("Next:");
                say!(
                    "  1. destroy the plaintext key and every copy of it: shred -u {}",
                    a.key.display()
                );
                say!(
                    "  2. back up {} on two offline media; keep its {} apart from it",
                    a.ca_dir.join(ca::CA_KEY).display(),
                    secret_name(&protection)
                );
                say!(
                    "  3. sign requests: nrfca sign --ca-dir {} --out BUNDLE requests.csv",
                    a.ca_dir.display()
                );
            }
            Ok(Outcome::Done)
        }
        CaCmd::VerifyKey(a) => {
            let unlock = a.unlock.unlock_for(&a.ca_dir)?;
            let u = with_spinner("unlocking the CA key", || {
                ca::unlock(&a.ca_dir, &unlock, &a.unlock.operator())
            })?;
            if a.json {
                print_json(&serde_json::json!({
                    "ok": true,
                    "fingerprint": u.cert.fingerprint,
                    "subject": u.cert.subject,
                }))?;
            } else {
                say!(
                    "the CA key unlocks and matches {} (sha256 {})",
                    a.ca_dir.join(ca::CA_PEM).display(),
                    u.cert.fingerprint
                );
            }
            Ok(Outcome::Done)
        }
        CaCmd::TrustBench(a) => {
            let pem = std::fs::read_to_string(&a.key)
                .map_err(|e| format!("cannot read {}: {e}", a.key.display()))?;
            let unlock = a.unlock.unlock_for(&a.ca_dir)?;
            let b = ca::trust_bench(&a.ca_dir, &a.name, &pem, &unlock, &a.unlock.operator())?;
            say!("trusted bench {} (key sha256 {})", b.name, b.fingerprint);
            Ok(Outcome::Done)
        }
        CaCmd::DistrustBench(a) => {
            let unlock = a.unlock.unlock_for(&a.ca_dir)?;
            let b = ca::distrust_bench(&a.ca_dir, &a.name, &unlock, &a.unlock.operator())?;
            say!(
                "bench {} (key sha256 {}) is no longer trusted",
                b.name,
                b.fingerprint
            );
            Ok(Outcome::Done)
        }
        CaCmd::Protect(a) => {
            // Refuse bad recipients or identities before asking for any passphrase.
            if !a.new_recipient.is_empty() {
                protect::check_new(
                    &Protection::Recipients(a.new_recipient.clone()),
                    &a.new_identity,
                )?;
            }
            let unlock = a.unlock.unlock_for(&a.ca_dir)?;
            let new = if a.new_recipient.is_empty() {
                Protection::Passphrase(resolve_protect_passphrase(
                    a.new_passphrase_file.as_deref(),
                )?)
            } else {
                Protection::Recipients(a.new_recipient.clone())
            };
            let r = with_spinner(
                "unlocking, re-encrypting and checking the CA key (scrypt takes a few seconds)",
                || {
                    protect::protect(
                        &a.ca_dir,
                        &unlock,
                        &new,
                        &a.new_identity,
                        &a.unlock.operator(),
                    )
                },
            )?;
            if a.json {
                print_json(&r)?;
            } else {
                say!(
                    "{} is now protected by {} (it opens to the key of ca.pem, sha256 {})",
                    a.ca_dir.join(ca::CA_KEY).display(),
                    r.new_protection,
                    r.fingerprint
                );
                say!("recorded in the audit log as key-protection-changed");
                say!(
                    "the old key file (protected by {}) is kept as {}",
                    r.old_protection,
                    a.ca_dir.join(&r.retired_file).display()
                );
                say!("Next:");
                say!(
                    "  1. back up the new {} on two offline media (old backups still open with the old {})",
                    a.ca_dir.join(ca::CA_KEY).display(),
                    if r.old_method == "passphrase" { "passphrase" } else { "identities" }
                );
                say!(
                    "  2. once you no longer need the old secret: shred -u {}",
                    a.ca_dir.join(&r.retired_file).display()
                );
            }
            Ok(Outcome::Done)
        }
        CaCmd::Show(a) => {
            let info = ca::show(&a.ca_dir)?;
            if a.json {
                print_json(&info)?;
            } else {
                print_stdout(&render(&info))?;
            }
            Ok(Outcome::Done)
        }
    }
}

/// What the spinner says while the new key is encrypted (scrypt takes about a second).
fn encrypt_message(p: &Protection) -> &'static str {
    match p {
        Protection::Passphrase(_) => "encrypting the CA key (scrypt, about a second)",
        _ => "encrypting the CA key",
    }
}

/// What the officer must keep apart from `ca.key.age`.
fn secret_name(p: &Protection) -> &'static str {
    match p {
        Protection::Passphrase(_) => "passphrase",
        _ => "identity files",
    }
}

/// Human rendering of [`CaInfo`].
fn render(info: &CaInfo) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("  {k:<12} {v}\n"));
    line("subject", &info.subject);
    line("serial", &info.serial);
    line("sha256", &info.fingerprint);
    line(
        "valid",
        &format!("{} to {}", info.not_before, info.not_after),
    );
    let unlock = match info.unlock_with.as_str() {
        "identity" => "unlock with --identity FILE",
        "passphrase" => "unlock with --passphrase-file, NRFCA_PASSPHRASE or the prompt",
        other => other,
    };
    line("key", &format!("{}; {unlock}", info.key_protection));
    line(
        "issued",
        &format!(
            "{} certificates in {} batches, {} rejected",
            info.issued, info.batches, info.rejected
        ),
    );
    line(
        "audit",
        &format!(
            "{} records, head {}",
            info.audit_records, info.audit_head_hash
        ),
    );
    for b in &info.trusted_benches {
        line(
            "bench",
            &format!("{} key {} since {}", b.name, b.fingerprint, b.since),
        );
    }
    for w in &info.warnings {
        line("warning", w);
    }
    s
}
