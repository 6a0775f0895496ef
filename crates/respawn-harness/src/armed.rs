//! A shell command made ready beforehand and fired by one write: the
//! drills' `kill -9` of a zone server and a host's death, each right after
//! a last look at the counters of what it kills.

use anyhow::{bail, Context, Result};

/// A shell command made ready beforehand (a `kill -9`, a host's death),
/// fired by one write rather than a fork and exec: it follows a last look
/// at a process's counters within a fraction of a millisecond.
#[derive(Debug)]
pub struct Armed {
    shell: tokio::process::Child,
    what: String,
}

impl Armed {
    /// `script` (sh), run once [`Armed::fire`] is called; `what` names it in errors.
    pub fn shell(script: &str, what: impl Into<String>) -> Result<Self> {
        let what = what.into();
        let shell = tokio::process::Command::new("sh")
            .args(["-c", &format!("read -r go && {script}")])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("sh for {what}"))?;
        Ok(Self { shell, what })
    }

    pub async fn fire(mut self) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        let mut stdin = self.shell.stdin.take().context("the armed shell's stdin")?;
        stdin.write_all(b"go\n").await?;
        drop(stdin);
        if !self.shell.wait().await?.success() {
            bail!("{} failed", self.what);
        }
        Ok(())
    }
}
