//! The edge's TLS, as wsctl.yaml names it: a certificate (chain allowed)
//! and its key, files on the machine that runs wsctl, and where plain HTTP
//! answers with a redirect. What the files hold is checked when a command
//! is about to use them (`deploy::tls`), not when the file is read: an
//! expired certificate must not stop `wsctl status` from showing the stack.

use std::path::PathBuf;

use serde::Deserialize;

/// `tls:` in wsctl.yaml (or in one host of `hosts:`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM: the server certificate, then its intermediates.
    pub certificate: PathBuf,
    /// PEM: its private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `Strict-Transport-Security` on every answer (two years): browsers
    /// then never try plain HTTP on that name again. Off by default, as it
    /// cannot be taken back from browsers that saw it.
    #[serde(default)]
    pub hsts: bool,
}

impl Tls {
    /// Paths relative to wsctl.yaml's directory, as `env_file`'s are.
    pub fn resolve_from(&mut self, base: &std::path::Path) {
        for path in [&mut self.certificate, &mut self.key] {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// The one line of wsctl.yaml's validation: both files exist.
    pub fn check_files(&self, at: &str) -> Result<(), String> {
        for (key, path) in [("certificate", &self.certificate), ("key", &self.key)] {
            if !path.is_file() {
                return Err(format!("{at}tls.{key} {} is not a file", path.display()));
            }
        }
        Ok(())
    }
}
