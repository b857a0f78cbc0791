//! `nrfca ca init | import | show | verify-key | protect`.

use super::common::{
    operator, print_json, print_stdout, resolve_custodian_passphrase, resolve_new_passphrase,
    resolve_pin, resolve_protect_passphrase, with_spinner, CliResult, Outcome, UnlockArgs,
};
use clap::{Args, Subcommand};
use nrfca::signer::ca::{self, CaInfo, InitOptions};
use nrfca::signer::key::pkcs11::TokenSelector;
use nrfca::signer::key::quorum::{self, Custodian, ShareLock};
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
    // ---- lifecycle (issue 14) ----
    /// Make the certificate AWS IoT asks for to register this CA: CN = the registration code,
    /// a fresh key of its own (AWS's throwaway proof key), signed by the CA; audited.
    #[command(
        after_help = "Example:\n  CODE=$(aws iot get-registration-code --query registrationCode --output text)   # online machine\n  nrfca ca verification-cert --ca-dir /media/ca --cn \"$CODE\" --out aws-verification\n  aws iot register-ca-certificate --ca-certificate file://ca.pem \\\n      --verification-cert file://aws-verification/verification.pem\n\nverification.key (mode 0600) is only for AWS's proof of possession: delete it (shred -u) after\nregistering."
    )]
    VerificationCert(crate::cli::ca_lifecycle::VerificationCertArgs),
    /// Make a new intermediate (signing) CA under a root made by `ca init --root`: its own key,
    /// protected like any CA key, and a certificate from the root (pathLen 0); audited in both.
    #[command(
        after_help = "The root key is unlocked with --root-identity or --root-passphrase-file (else NRFCA_PASSPHRASE,\nelse a prompt); the new key is protected with --recipient or --passphrase-file as for `ca init`.\n\nExample:\n  nrfca ca issue-intermediate --ca-dir /media/root --root-identity root.agekey \\\n      --new-ca-dir /media/ca-2026 --subject \"CN=Acme Device CA 2026,O=Acme\" --recipient age1...\n\nBundles from the new CA carry chain.pem; the bench may trust either ca.pem."
    )]
    IssueIntermediate(crate::cli::ca_lifecycle::IssueIntermediateArgs),
    /// Renew a quorum's share set: from M shares of the current set, split the same key among
    /// new custodians (and threshold); the old set is retired and opens nothing any more.
    #[command(
        after_help = "The current shares are given as for `sign` (--share FILE, M times, each with --share-passphrase-file NAME=F, --share-identity NAME=F or a prompt).\nThe new custodians' passphrases come from --new-share-passphrase-file NAME=F, else are asked twice on the terminal.\nThe old ca.key.age, quorum.json and shares/ are kept as *.retired-<time> until you remove them.\n\nExample:\n  nrfca ca reshare --ca-dir /media/ca --share alice.share.age --share bob.share.age --quorum 2 --custodian alice --custodian dave --custodian erin"
    )]
    Reshare(ReshareArgs),
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

/// Arguments of `ca reshare`.
#[derive(Debug, Args)]
pub struct ReshareArgs {
    /// CA directory.
    #[arg(long, value_name = "DIR")]
    pub ca_dir: PathBuf,
    #[command(flatten)]
    pub unlock: UnlockArgs,
    /// New M: shares needed to unlock (2 <= M <= N <= 16).
    #[arg(long, value_name = "M")]
    pub quorum: u8,
    /// A custodian of the new set: NAME or NAME=AGE_RECIPIENT; repeat N times.
    #[arg(long, value_name = "NAME[=AGE_RECIPIENT]", required = true)]
    pub custodian: Vec<String>,
    /// NAME=FILE: the first line of FILE is new custodian NAME's share passphrase.
    #[arg(long, value_name = "NAME=FILE")]
    pub new_share_passphrase_file: Vec<String>,
    /// scrypt work factor (log2 N) of passphrase-locked shares.
    #[arg(long, value_name = "N", default_value_t = nrfca::signer::secret::DEFAULT_SCRYPT_LOG_N)]
    pub scrypt_log_n: u8,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
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
    /// Move the key to a quorum: any M of the --custodian shares unlock it.
    #[arg(long, value_name = "M", requires = "custodian", conflicts_with_all = ["new_passphrase_file", "new_recipient", "pkcs11"])]
    pub quorum: Option<u8>,
    /// A custodian of the new quorum: NAME or NAME=AGE_RECIPIENT; repeat N times.
    #[arg(long, value_name = "NAME[=AGE_RECIPIENT]", requires = "quorum")]
    pub custodian: Vec<String>,
    /// NAME=FILE: the first line of FILE is new custodian NAME's share passphrase.
    #[arg(long, value_name = "NAME=FILE", requires = "quorum")]
    pub new_share_passphrase_file: Vec<String>,
    /// scrypt work factor (log2 N) of the new passphrase-locked shares.
    #[arg(long, value_name = "N", default_value_t = nrfca::signer::secret::DEFAULT_SCRYPT_LOG_N)]
    pub scrypt_log_n: u8,
    /// Move the key into a PKCS#11 token (imported as sensitive, not extractable): the
    /// module's path. The token's PIN comes from --pin-file, NRFCA_PKCS11_PIN or a prompt.
    #[arg(long, value_name = "MODULE", conflicts_with_all = ["new_passphrase_file", "new_recipient"])]
    pub pkcs11: Option<PathBuf>,
    /// Label of the token to move the key into.
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub token_label: Option<String>,
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
    /// scrypt work factor (log2 N) of a passphrase-protected key or share: 18 needs about
    /// 256 MiB to unlock, 20 about 1 GiB (accepted 10..=22; below 16 only for tests).
    #[arg(long, value_name = "N", default_value_t = nrfca::signer::secret::DEFAULT_SCRYPT_LOG_N)]
    pub scrypt_log_n: u8,
    /// Split the key among custodians: any M of the --custodian shares unlock it
    /// (2 <= M <= N <= 16).
    #[arg(long, value_name = "M", requires = "custodian", conflicts_with_all = ["recipient", "passphrase_file", "pkcs11"])]
    pub quorum: Option<u8>,
    /// A custodian of the quorum: NAME (a share passphrase is asked, or
    /// --share-passphrase-file) or NAME=AGE_RECIPIENT; repeat N times. Shares go to
    /// DIR/shares/NAME.share.age.
    #[arg(long, value_name = "NAME[=AGE_RECIPIENT]", requires = "quorum")]
    pub custodian: Vec<String>,
    /// NAME=FILE: the first line of FILE is custodian NAME's new share passphrase.
    #[arg(long, value_name = "NAME=FILE", requires = "quorum")]
    pub share_passphrase_file: Vec<String>,
    /// Keep the key in a PKCS#11 token (HSM, smart card, SoftHSM2): the module's path. The
    /// key is generated in (init) or imported into (import) the token, not extractable;
    /// DIR/ca.key.pkcs11 names it.
    #[arg(long, value_name = "MODULE", conflicts_with_all = ["recipient", "passphrase_file"])]
    pub pkcs11: Option<PathBuf>,
    /// Label of the token to use (needed when the module has several).
    #[arg(long, value_name = "LABEL", requires = "pkcs11")]
    pub token_label: Option<String>,
    /// File whose first line is the token's user PIN (else $NRFCA_PKCS11_PIN, else a prompt).
    #[arg(long, value_name = "FILE", requires = "pkcs11")]
    pub pin_file: Option<PathBuf>,
    /// Name recorded in the audit log (default: $USER).
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ProtectArgs {
    /// How the new key is held.
    pub(super) fn custody(&self) -> Result<ca::NewCustody, Box<dyn std::error::Error>> {
        if let Some(m) = self.quorum {
            let custodians = custodians(&self.custodian, &self.share_passphrase_file)?;
            return Ok(ca::NewCustody::Quorum {
                threshold: m,
                custodians,
                scrypt_log_n: self.scrypt_log_n,
            });
        }
        if let Some(module) = &self.pkcs11 {
            let pin = resolve_pin(self.pin_file.as_deref(), "user PIN of the PKCS#11 token: ")?;
            return Ok(ca::NewCustody::Pkcs11 {
                module: module.clone(),
                token: TokenSelector {
                    label: self.token_label.clone(),
                    serial: None,
                },
                pin,
                label: "nrfca CA".to_string(),
            });
        }
        Ok(ca::NewCustody::Age {
            scrypt_log_n: self.scrypt_log_n,
        })
    }

    /// The protection of an age-held key (ignored for a quorum or a token).
    pub(super) fn protection_for(
        &self,
        custody: &ca::NewCustody,
    ) -> Result<Protection, Box<dyn std::error::Error>> {
        match custody {
            ca::NewCustody::Age { .. } => self.protection(),
            _ => Ok(Protection::Recipients(Vec::new())),
        }
    }

    pub(super) fn protection(&self) -> Result<Protection, Box<dyn std::error::Error>> {
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
    /// Make an offline root CA (no pathLen limit) that signs CAs and CRLs only, never device
    /// batches: issue the signing CA from it with `nrfca ca issue-intermediate`.
    #[arg(long)]
    pub root: bool,
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

/// Run a CA subcommand: one function per subcommand, each calling one library function.
pub fn run(cmd: CaCmd) -> CliResult {
    match cmd {
        // ---- lifecycle (issue 14) ----
        CaCmd::VerificationCert(a) => crate::cli::ca_lifecycle::verification_cert(a),
        CaCmd::IssueIntermediate(a) => crate::cli::ca_lifecycle::issue_intermediate(a),
        CaCmd::Init(a) => init(a),
        CaCmd::Import(a) => import(a),
        CaCmd::VerifyKey(a) => verify_key(a),
        CaCmd::Protect(a) if a.quorum.is_some() || a.pkcs11.is_some() => protect_custody(a),
        CaCmd::TrustBench(a) => trust_bench(a),
        CaCmd::DistrustBench(a) => distrust_bench(a),
        CaCmd::Protect(a) => protect_age(a),
        CaCmd::Reshare(a) => reshare(a),
        CaCmd::Show(a) => show(a),
    }
}

/// `ca init`: create a CA, then say what to back up and hand over.
fn init(a: InitArgs) -> CliResult {
    let custody = a.protect.custody()?;
    let protection = a.protect.protection_for(&custody)?;
    let opts = InitOptions {
        subject: a.subject,
        days: a.days,
        protection,
        operator: operator(a.protect.operator.clone()),
    };
    let info = with_spinner(encrypt_message(&opts.protection), || {
        if a.root {
            ca::init_root(&a.ca_dir, &opts, &custody)
        } else {
            ca::init_with(&a.ca_dir, &opts, &custody)
        }
    })?;
    if a.protect.json {
        print_json(&info)?;
    } else {
        say!("CA created in {}", a.ca_dir.display());
        say_raw!("{}", render(&info));
        say!("Next:");
        say!("{}", backup_step(&a.ca_dir, &custody, &opts.protection, 1));
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

/// `ca import`: adopt a create_ca_cert CA, then say what to destroy and back up.
fn import(a: ImportArgs) -> CliResult {
    let custody = a.protect.custody()?;
    let protection = a.protect.protection_for(&custody)?;
    let info = with_spinner(encrypt_message(&protection), || {
        ca::import_with(
            &a.ca_dir,
            &a.cert,
            &a.key,
            &protection,
            &operator(a.protect.operator.clone()),
            &custody,
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
        say!("{}", backup_step(&a.ca_dir, &custody, &protection, 2));
        say!(
            "  3. sign requests: nrfca sign --ca-dir {} --out BUNDLE requests.csv",
            a.ca_dir.display()
        );
    }
    Ok(Outcome::Done)
}

/// `ca verify-key`: unlock the key and check it against ca.pem.
fn verify_key(a: VerifyKeyArgs) -> CliResult {
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

/// `ca protect --quorum` / `--pkcs11`: move the key to a quorum or a token.
fn protect_custody(a: ProtectKeyArgs) -> CliResult {
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let new = if let Some(m) = a.quorum {
        ca::NewCustody::Quorum {
            threshold: m,
            custodians: custodians(&a.custodian, &a.new_share_passphrase_file)?,
            scrypt_log_n: a.scrypt_log_n,
        }
    } else {
        ca::NewCustody::Pkcs11 {
            module: a.pkcs11.clone().unwrap_or_default(),
            token: TokenSelector {
                label: a.token_label.clone(),
                serial: None,
            },
            pin: resolve_pin(
                a.unlock.pin_file.as_deref(),
                "user PIN of the PKCS#11 token to move the key into: ",
            )?,
            label: "nrfca CA".to_string(),
        }
    };
    let r = with_spinner(
        "unlocking the CA key and moving it to the new custody",
        || protect::protect_custody(&a.ca_dir, &unlock, &new, &a.unlock.operator()),
    )?;
    if a.json {
        print_json(&r)?;
    } else {
        say!(
            "the CA key (sha256 {}) is now held by {}",
            r.fingerprint,
            r.new_protection
        );
        say!("recorded in the audit log as key-protection-changed (its checkpoint signed by the new custody)");
        say!(
            "the old key file (protected by {}) is kept as {}",
            r.old_protection,
            a.ca_dir.join(&r.retired_file).display()
        );
        say!("Next:");
        if a.quorum.is_some() {
            say!(
                "  1. hand each custodian their share file from {}, then remove it here",
                a.ca_dir.join(ca::SHARES_DIR).display()
            );
        } else {
            say!("  1. the key now lives in the token only: keep the token and its PIN safe");
        }
        say!(
            "  2. once the new custody is tested (`nrfca ca verify-key`), remove the retired files: shred -u {}",
            a.ca_dir.join(&r.retired_file).display()
        );
    }
    Ok(Outcome::Done)
}

/// `ca trust-bench`.
fn trust_bench(a: TrustBenchArgs) -> CliResult {
    let pem = std::fs::read_to_string(&a.key)
        .map_err(|e| format!("cannot read {}: {e}", a.key.display()))?;
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let b = ca::trust_bench(&a.ca_dir, &a.name, &pem, &unlock, &a.unlock.operator())?;
    say!("trusted bench {} (key sha256 {})", b.name, b.fingerprint);
    Ok(Outcome::Done)
}

/// `ca distrust-bench`.
fn distrust_bench(a: DistrustBenchArgs) -> CliResult {
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let b = ca::distrust_bench(&a.ca_dir, &a.name, &unlock, &a.unlock.operator())?;
    say!(
        "bench {} (key sha256 {}) is no longer trusted",
        b.name,
        b.fingerprint
    );
    Ok(Outcome::Done)
}

/// `ca protect`: a new passphrase or new age recipients for ca.key.age.
fn protect_age(a: ProtectKeyArgs) -> CliResult {
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
            if r.old_method == "passphrase" {
                "passphrase"
            } else {
                "identities"
            }
        );
        say!(
            "  2. once you no longer need the old secret: shred -u {}",
            a.ca_dir.join(&r.retired_file).display()
        );
    }
    Ok(Outcome::Done)
}

/// `ca reshare`: split the key among a new share set.
fn reshare(a: ReshareArgs) -> CliResult {
    let unlock = a.unlock.unlock_for(&a.ca_dir)?;
    let custodians = custodians(&a.custodian, &a.new_share_passphrase_file)?;
    let r = with_spinner("combining the shares and writing the new set", || {
        ca::reshare(
            &a.ca_dir,
            &unlock,
            a.quorum,
            &custodians,
            a.scrypt_log_n,
            &a.unlock.operator(),
        )
    })?;
    if a.json {
        print_json(&r)?;
    } else {
        say!(
            "the key of the CA (sha256 {}) is now held {}-of-{} by {} (share set {}); opened by {}",
            r.fingerprint,
            r.threshold,
            r.custodians.len(),
            r.custodians.join(", "),
            r.new_set,
            r.participants.join(", ")
        );
        say!(
            "the old share set {} is retired: its shares open nothing any more",
            r.old_set
        );
        say!("recorded in the audit log as key-reshared");
        say!("Next:");
        say!("  1. hand each new custodian their share file, then remove it here:");
        for f in &r.share_files {
            say!("       {}", f.display());
        }
        say!(
            "  2. back up the new {} and {}; once the new set is tested, remove the retired files: {}",
            a.ca_dir.join(ca::CA_KEY).display(),
            a.ca_dir.join(ca::QUORUM_MANIFEST).display(),
            r.retired.join(", ")
        );
    }
    Ok(Outcome::Done)
}

/// `ca show`.
fn show(a: ShowArgs) -> CliResult {
    let info = ca::show(&a.ca_dir)?;
    if a.json {
        print_json(&info)?;
    } else {
        print_stdout(&render(&info))?;
    }
    Ok(Outcome::Done)
}

/// The custodians of a new share set: names checked, passphrases read (or asked) for those
/// without a recipient.
fn custodians(
    args: &[String],
    passphrase_files: &[String],
) -> Result<Vec<Custodian>, Box<dyn std::error::Error>> {
    let parsed: Vec<(String, Option<String>)> = args
        .iter()
        .map(|a| quorum::parse_custodian_arg(a))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(parsed.len());
    for (name, recipient) in parsed {
        let lock = match recipient {
            Some(r) => ShareLock::Recipient(r),
            None => ShareLock::Passphrase(resolve_custodian_passphrase(&name, passphrase_files)?),
        };
        out.push(Custodian { name, lock });
    }
    Ok(out)
}

/// What the spinner says while the new key is encrypted (scrypt takes about a second).
pub(super) fn encrypt_message(p: &Protection) -> &'static str {
    match p {
        Protection::Passphrase(_) => "encrypting the CA key (scrypt, about a second)",
        _ => "encrypting the CA key",
    }
}

/// The "back up" step after init/import, by custody.
fn backup_step(
    ca_dir: &std::path::Path,
    custody: &ca::NewCustody,
    protection: &Protection,
    n: u32,
) -> String {
    match custody {
        ca::NewCustody::Age { .. } => format!(
            "  {n}. back up {} on two offline media; keep its {} apart from it",
            ca_dir.join(ca::CA_KEY).display(),
            secret_name(protection)
        ),
        ca::NewCustody::Quorum { .. } => format!(
            "  {n}. hand each custodian their share file from {} (move it to their own medium, then remove it here); back up {}, {} and ca.pem on two offline media",
            ca_dir.join(ca::SHARES_DIR).display(),
            ca_dir.join(ca::CA_KEY).display(),
            ca_dir.join(ca::QUORUM_MANIFEST).display()
        ),
        ca::NewCustody::Pkcs11 { .. } => format!(
            "  {n}. the key lives in the token only (not extractable): keep the token and its PIN safe; {} names it (not secret)",
            ca_dir.join(ca::CA_KEY_PKCS11).display()
        ),
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
pub(super) fn render(info: &CaInfo) -> String {
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
        "shares" => "unlock with --share FILE once per custodian taking part",
        "pin" => "unlock with the token's PIN (--pin-file, NRFCA_PKCS11_PIN or the prompt)",
        "passphrase" => "unlock with --passphrase-file, NRFCA_PASSPHRASE or the prompt",
        other => other,
    };
    // For a passphrase, the work factor as the key file records it now.
    let held = match &info.custody {
        Some(c @ nrfca::signer::key::Custody::Passphrase { .. }) => c.describe(),
        _ => info.key_protection.clone(),
    };
    line("key", &format!("{held}; {unlock}"));
    line(
        "issued",
        &format!(
            "{} certificates in {} batches, {} rejected",
            info.issued, info.batches, info.rejected
        ),
    );
    if info.revoked > 0 || info.crls > 0 {
        line(
            "revoked",
            &format!("{} certificates; {} CRLs issued", info.revoked, info.crls),
        );
    }
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
