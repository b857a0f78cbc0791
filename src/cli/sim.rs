//! `nrfca sim`: start simulated modems, print their ports, run until SIGINT/SIGTERM.

use super::common::{print_stdout, CliResult, Outcome};
use clap::Args;
use nix::sys::signal::{SigSet, Signal};
use nrfca::sim::{FaultSpec, Latency, Profile, SimConfig, Simulator};
use std::path::PathBuf;

/// Arguments of `nrfca sim`.
#[derive(Debug, Args)]
#[command(after_help = "Faults (NAME[:COMMAND][@MODEM], repeatable):
  disconnect           port vanishes mid-reply, comes back rebooted (one-shot)
  garbage              a line of noise bytes before every reply
  urcs                 URCs and log lines interleaved with every reply
  slow                 replies 10x slower (+250 ms), trickled in 16-byte pieces
  lost-final           the final result of a command is not sent (one-shot)
  cme-on-write         %CMNG writes answer +CME ERROR: 528
  storage-full         %CMNG writes and %KEYGEN answer +CME ERROR: 515
  keygen-fail          the next %KEYGEN answers +CME ERROR: 523 (one-shot)
  first-command-fails  the first command after each boot answers ERROR
One-shot faults fire once (disconnect and lost-final on the first successful %KEYGEN,
%CMNG=0 or %CMNG=3 unless :COMMAND says otherwise, e.g. lost-final:+CGSN or lost-final:*).
@MODEM limits a fault to one modem (0-based). See docs/simulator.md.

Example:
  nrfca sim --count 4 --link-dir /tmp/modems --state sim.json --fault lost-final:%KEYGEN@2
  nrfca bench export --port /tmp/modems/modem0 --port /tmp/modems/modem1 --out requests.csv")]
pub struct SimArgs {
    /// Number of modems.
    #[arg(long, short = 'n', default_value_t = 1)]
    count: usize,
    /// Also make stable symlinks DIR/modem0, DIR/modem1, … and print those instead of the
    /// /dev/pts paths (they survive a simulated disconnect; removed on exit).
    #[arg(long, value_name = "DIR")]
    link_dir: Option<PathBuf>,
    /// What the modems imitate: nrf9160 (mfw 1.3.7, AT Client), nrf91x1 (nRF9161, mfw 2.0.2,
    /// AT Client), nrf9151, nrf9131, nrf9151-ntn (NTN firmware), slm (Serial LTE Modem
    /// framing on an nRF9160), shell (nRF9161 behind the nRF Connect SDK shell: `at
    /// <command>`, echo, `uart:~$ ` prompt).
    #[arg(long, default_value = "nrf9160", value_parser = parse_profile)]
    profile: Profile,
    /// Switch on a fault: NAME[:COMMAND][@MODEM] (see below). Repeatable.
    #[arg(long = "fault", value_name = "FAULT", value_parser = parse_fault)]
    faults: Vec<FaultSpec>,
    /// Instead of firing once (one-shot) or always (standing), every fault fires on each
    /// eligible command with this probability (0..1), drawn from --seed.
    #[arg(long, value_name = "P")]
    fault_probability: Option<f64>,
    /// JSON file keeping every modem's identity and credentials between runs (created if
    /// missing, written on exit). Holds simulated secrets in plain text: test use only.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Response timing: none, test (a few ms) or realistic (KEYGEN 1–3 s, CFUN 0.2–0.8 s).
    #[arg(long, default_value = "test", value_parser = parse_latency)]
    latency: Latency,
    /// Seed for reproducible IMEIs, UUIDs, identity keys and fault draws.
    #[arg(long)]
    seed: Option<u64>,
    /// Functional mode the modems boot in (0, 1 or 4).
    #[arg(long, default_value_t = 0, value_parser = parse_cfun)]
    boot_cfun: u8,
    /// Print `<port>\t<imei>\t<uuid>\t<identity public key hex>` per modem instead of the
    /// port alone (the identity key verifies the modem's COSE signatures).
    #[arg(long)]
    print_identity: bool,
}

fn parse_profile(s: &str) -> Result<Profile, String> {
    s.parse()
}

fn parse_latency(s: &str) -> Result<Latency, String> {
    s.parse()
}

fn parse_fault(s: &str) -> Result<FaultSpec, String> {
    s.parse()
}

fn parse_cfun(s: &str) -> Result<u8, String> {
    match s.trim() {
        "0" => Ok(0),
        "1" => Ok(1),
        "4" => Ok(4),
        _ => Err(format!("boot functional mode must be 0, 1 or 4, not `{s}`")),
    }
}

/// Run `sim`.
pub fn run(args: SimArgs) -> CliResult {
    // Block the signals before any modem thread exists, so all of them inherit the mask and
    // only `wait` below receives SIGINT/SIGTERM.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block()?;

    let cfg = SimConfig {
        count: args.count,
        profile: args.profile,
        faults: Vec::new(),
        fault_specs: args.faults,
        fault_probability: args.fault_probability,
        state_file: args.state,
        link_dir: args.link_dir,
        latency: args.latency,
        seed: args.seed,
        boot_cfun: args.boot_cfun,
    };
    let sim = Simulator::start(cfg)?;
    {
        let mut out = String::new();
        for (i, port) in sim.ports().iter().enumerate() {
            if args.print_identity {
                let s = sim.snapshot(i);
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\n",
                    port.display(),
                    s.imei,
                    s.uuid,
                    hex::encode(s.identity_public_key)
                ));
            } else {
                out.push_str(&format!("{}\n", port.display()));
            }
        }
        // A closed stdout is not an error: the modems run until interrupted all the same.
        print_stdout(&out)?;
    }
    say!(
        "nrfca sim: {} {} modem(s) running; Ctrl-C to stop",
        sim.count(),
        args.profile
    );
    let sig = signals.wait()?;
    say!("nrfca sim: {sig}, stopping");
    sim.shutdown()?;
    Ok(Outcome::Done)
}
