//! Certificates made with Debian's `openssl`, as an operator makes them: a
//! private CA, server certificates it signs (for `localhost` and
//! 127.0.0.1, with a chosen serial), one that expired, and their keys.
//! Everything lives in a directory of its own, removed when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::docker::explain;

pub struct Certs {
    pub dir: PathBuf,
}

impl Certs {
    /// A new CA in a new directory (`ca.pem`, `ca.key`).
    pub fn new() -> Certs {
        let unique = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let dir = std::env::temp_dir().join(format!("wsctl-certs-{unique}"));
        std::fs::create_dir_all(&dir).expect("certs directory");
        let certs = Certs { dir };
        certs.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=wsctl test CA",
            "-days",
            "3",
        ]);
        std::fs::write(certs.dir.join("index.txt"), "").expect("index.txt");
        std::fs::write(certs.dir.join("serial"), "1000\n").expect("serial");
        let config = format!(
            "[ca]\ndefault_ca = test\n[test]\ndir = {dir}\ndatabase = {dir}/index.txt\n\
             new_certs_dir = {dir}\nserial = {dir}/serial\ndefault_md = sha256\n\
             policy = any\ncopy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n",
            dir = certs.dir.display()
        );
        std::fs::write(certs.dir.join("ca.cnf"), config).expect("ca.cnf");
        certs
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn openssl(&self, args: &[&str]) {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("openssl (Debian's openssl package)");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            explain(&output)
        );
    }

    /// A P-256 key `NAME.key`.
    pub fn key(&self, name: &str) -> PathBuf {
        let file = format!("{name}.key");
        self.openssl(&[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &file,
        ]);
        self.path(&file)
    }

    /// `NAME.pem`: the CA signs `key` for localhost and 127.0.0.1 with
    /// `serial` (hex), valid from `start` to `end` (`YYYYMMDDHHMMSSZ`;
    /// `None`: from now, for a day). The file holds the certificate and
    /// then the CA's: a chain, as ACME clients write `fullchain.pem`.
    pub fn certificate(
        &self,
        name: &str,
        key: &Path,
        serial: &str,
        dates: Option<(&str, &str)>,
    ) -> PathBuf {
        let csr = format!("{name}.csr");
        let key = key.display().to_string();
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            "/CN=localhost",
            "-out",
            &csr,
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ]);
        std::fs::write(self.path("serial"), format!("{serial}\n")).expect("serial");
        let leaf = format!("{name}.leaf.pem");
        let mut args = vec![
            "ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile",
            "ca.key", "-in", &csr, "-out", &leaf,
        ];
        match dates {
            Some((start, end)) => args.extend(["-startdate", start, "-enddate", end]),
            None => args.extend(["-days", "1"]),
        }
        self.openssl(&args);
        let chain = format!(
            "{}{}",
            std::fs::read_to_string(self.path(&leaf)).expect("leaf"),
            std::fs::read_to_string(self.path("ca.pem")).expect("ca")
        );
        let file = self.path(&format!("{name}.pem"));
        std::fs::write(&file, chain).expect("chain");
        file
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The serial of the certificate a new TLS connection to `address` sees.
pub fn served_serial(address: &str) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address} -servername localhost </dev/null 2>/dev/null \
             | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl s_client");
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .trim_start_matches("serial=")
        .to_string()
}
