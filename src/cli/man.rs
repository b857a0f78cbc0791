//! `nrfca man [COMMAND...] [--out DIR]`: manual pages (clap_mangen) from the same clap tree
//! as `--help`, so they never disagree.

use super::common::{print_stdout, CliResult, Outcome};
use clap::Args;
use std::path::{Path, PathBuf};

/// Arguments of `nrfca man`.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  nrfca man | man -l -                  # read nrfca(1) now
  nrfca man bench import | man -l -     # the page of one command
  nrfca man --out /usr/local/share/man/man1 && mandb")]
pub struct ManArgs {
    /// The command whose page to print (e.g. `ca init`); default: nrfca itself.
    #[arg(value_name = "COMMAND", conflicts_with = "out")]
    pub command: Vec<String>,
    /// Write nrfca.1 and one page per command (nrfca-ca-init.1, ...) into DIR (created if
    /// missing; existing pages are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Run `man`.
pub fn run(a: ManArgs) -> CliResult {
    let mut root = super::command().disable_help_subcommand(true);
    root.build();
    if let Some(dir) = &a.out {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}; check the path", dir.display()))?;
        let mut written = Vec::new();
        write_pages(&root, "nrfca", dir, &mut written)?;
        for p in &written {
            say!("wrote {}", p.display());
        }
        say!(
            "{} manual pages in {}; read one with `man -l {}`",
            written.len(),
            dir.display(),
            dir.join("nrfca.1").display()
        );
        return Ok(Outcome::Done);
    }
    let mut cmd = root;
    let mut words = vec!["nrfca".to_string()];
    for word in &a.command {
        let here = words.join(" ");
        let sub = cmd
            .find_subcommand(word)
            .filter(|s| !s.is_hide_set())
            .cloned()
            .ok_or_else(|| {
                format!("`{here} {word}` is not a command; see `{here} --help` for the list")
            })?;
        words.push(sub.get_name().to_string());
        cmd = sub;
    }
    let name = words.join("-");
    print_stdout(&render(cmd, &name)?)?;
    Ok(Outcome::Done)
}

/// The roff of `cmd`'s page, its examples unfilled (see [`unfill_examples`]).
fn render(cmd: clap::Command, name: &str) -> Result<String, Box<dyn std::error::Error>> {
    let mut buf = Vec::new();
    page(cmd, name)
        .render(&mut buf)
        .map_err(|e| format!("cannot render the manual page: {e}"))?;
    Ok(unfill_examples(&String::from_utf8_lossy(&buf)))
}

/// clap_mangen puts `after_help` into the page as filled text, so man justifies the example
/// lines and spreads their `# comments` across the line. Each block that starts with a line
/// `Example:`/`Examples:` is wrapped in `.nf`/`.fi` (no fill) up to the next blank line or
/// section, so it shows as written.
pub fn unfill_examples(roff: &str) -> String {
    let mut out = String::with_capacity(roff.len() + 32);
    let mut in_example = false;
    for line in roff.lines() {
        if in_example && (line.trim().is_empty() || line.starts_with(".SH")) {
            out.push_str(".fi\n");
            in_example = false;
        }
        out.push_str(line);
        out.push('\n');
        let t = line.trim();
        if !in_example && (t == "Example:" || t == "Examples:") {
            out.push_str(".nf\n");
            in_example = true;
        }
    }
    if in_example {
        out.push_str(".fi\n");
    }
    out
}

/// The page of `cmd`, named `name` (`nrfca-ca-init`).
fn page(cmd: clap::Command, name: &str) -> clap_mangen::Man {
    clap_mangen::Man::new(cmd.display_name(name.to_string()))
        .source(format!("nrfca {}", env!("CARGO_PKG_VERSION")))
        .manual("nrfca manual")
}

/// Write the page of `cmd` (named `name`) and of every visible subcommand, depth first.
fn write_pages(
    cmd: &clap::Command,
    name: &str,
    dir: &Path,
    written: &mut Vec<PathBuf>,
) -> Result<(), Box<dyn std::error::Error>> {
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, render(cmd.clone(), name)?)
        .map_err(|e| format!("cannot write a manual page into {}: {e}", dir.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let sub_name = format!("{name}-{}", sub.get_name());
        write_pages(sub, &sub_name, dir, written)?;
    }
    Ok(())
}
