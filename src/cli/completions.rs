//! `nrfca completions <shell>`: a shell completion script on stdout (clap_complete).

use super::common::{print_stdout, CliResult, Outcome};
use clap::Args;
use clap_complete::Shell;

/// Arguments of `nrfca completions`.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  nrfca completions bash > ~/.local/share/bash-completion/completions/nrfca
  nrfca completions zsh > \"${fpath[1]}/_nrfca\"
  nrfca completions fish > ~/.config/fish/completions/nrfca.fish")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Run `completions`.
pub fn run(a: CompletionsArgs) -> CliResult {
    let mut cmd = super::command();
    let mut buf = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "nrfca", &mut buf);
    let text =
        String::from_utf8(buf).map_err(|e| format!("completion script is not UTF-8: {e}"))?;
    print_stdout(&text)?;
    Ok(Outcome::Done)
}
