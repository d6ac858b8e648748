//! TLS at the edge: the certificate and key of wsctl.yaml's `tls:`,
//! checked before anything changes, uploaded into the stack's Nginx when
//! they differ from what it has, and the TLS listener that Nginx's server
//! block includes (`include /etc/nginx/conf.d/tls*.conf;` in
//! nginx/nginx.conf).
//!
//! Nginx reads the files when it starts and on every reload; a reload
//! starts new workers with the new certificate and leaves the old workers
//! their open sockets (nginx.conf has no `worker_shutdown_timeout`), so a
//! rotation never cuts a socket: `wsctl tls reload`.

use sha2::{Digest, Sha256};

use super::{DeployError, Stack, docker};
use crate::deploy::config::{StackConfig, Tls};

/// Where the files go in the Nginx container: conf.d exists in both Nginx
/// images, and only `upstream.conf` and `tls*.conf` of it are included.
const DIR: &str = "/etc/nginx/conf.d";
const CONF: &str = "tls.conf";
const CERTIFICATE: &str = "tls-certificate.pem";
const KEY: &str = "tls-key.pem";

/// A certificate and key that passed the checks.
#[derive(Debug, Clone)]
pub struct Material {
    pub certificate: Vec<u8>,
    pub key: Vec<u8>,
    /// The server certificate (first of the chain), DER: what wsctl's own
    /// looks through the public address expect Nginx to present.
    pub leaf: Vec<u8>,
    /// The server certificate's serial, `01:a2:...` as openssl prints it.
    pub serial: String,
    /// When it expires (RFC 3339), and in how many whole days.
    pub not_after: String,
    pub days_left: i64,
}

/// Reads and checks `tls`: the certificate parses (a chain allowed), is
/// valid now, and its public key is the key's. Any failure is one line
/// naming the file and why (exit 2), before anything changes.
pub fn load(tls: &Tls) -> Result<Material, DeployError> {
    let refuse = |path: &std::path::Path, why: String| {
        DeployError::Usage(format!("{}: {why}", path.display()))
    };
    let certificate = std::fs::read(&tls.certificate)
        .map_err(|error| refuse(&tls.certificate, format!("cannot read it: {error}")))?;
    let key = std::fs::read(&tls.key)
        .map_err(|error| refuse(&tls.key, format!("cannot read it: {error}")))?;

    let mut chain = Vec::new();
    for pem in x509_parser::pem::Pem::iter_from_buffer(&certificate) {
        let pem = pem.map_err(|error| refuse(&tls.certificate, format!("not PEM: {error}")))?;
        if pem.label == "CERTIFICATE" {
            chain.push(pem);
        }
    }
    let Some(first) = chain.first() else {
        return Err(refuse(&tls.certificate, "holds no PEM certificate".into()));
    };
    let leaf = first.parse_x509().map_err(|error| {
        refuse(
            &tls.certificate,
            format!("not an X.509 certificate: {error}"),
        )
    })?;
    let validity = leaf.validity();
    let now = chrono::Utc::now().timestamp();
    let at = |time: &x509_parser::time::ASN1Time| {
        chrono::DateTime::from_timestamp(time.timestamp(), 0)
            .map_or_else(|| time.to_string(), |date| date.to_rfc3339())
    };
    if validity.not_after.timestamp() < now {
        return Err(refuse(
            &tls.certificate,
            format!("expired on {}", at(&validity.not_after)),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(refuse(
            &tls.certificate,
            format!("not valid before {}", at(&validity.not_before)),
        ));
    }

    use rustls::pki_types::pem::PemObject;
    let private = rustls::pki_types::PrivateKeyDer::from_pem_slice(&key)
        .map_err(|error| refuse(&tls.key, format!("no PEM private key: {error:?}")))?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&private)
        .map_err(|error| refuse(&tls.key, format!("not a usable private key: {error}")))?;
    let chain_der: Vec<rustls::pki_types::CertificateDer<'static>> = chain
        .iter()
        .map(|pem| rustls::pki_types::CertificateDer::from(pem.contents.clone()))
        .collect();
    let certified = rustls::sign::CertifiedKey::new(chain_der, signing);
    match certified.keys_match() {
        Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(_) => {
            return Err(refuse(
                &tls.key,
                format!("is not the key of {}", tls.certificate.display()),
            ));
        }
    }
    Ok(Material {
        leaf: first.contents.clone(),
        serial: leaf.raw_serial_as_string(),
        not_after: at(&validity.not_after),
        days_left: (validity.not_after.timestamp() - now) / 86_400,
        certificate,
        key,
    })
}

/// The stack's material, if it has `tls:`.
pub fn material(config: &StackConfig) -> Result<Option<Material>, DeployError> {
    config.tls.as_ref().map(load).transpose()
}

/// The lines Nginx's server block includes: a TLS listener beside the
/// plain one (TLS 1.2 and 1.3, Mozilla's "intermediate" ciphers), and a
/// redirect of plain requests to the `https://` public address.
pub fn server_conf(config: &StackConfig) -> String {
    let port = config.public_socket().port();
    let port = match port {
        443 => String::new(),
        port => format!(":{port}"),
    };
    format!(
        "# Rendered by wsctl from wsctl.yaml's tls: (deploy/tls.rs).\n\
         listen 443 ssl reuseport;\n\
         ssl_certificate {DIR}/{CERTIFICATE};\n\
         ssl_certificate_key {DIR}/{KEY};\n\
         ssl_protocols TLSv1.2 TLSv1.3;\n\
         ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:\
         ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:\
         ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;\n\
         ssl_prefer_server_ciphers off;\n\
         ssl_session_cache shared:wsctl_tls:10m;\n\
         ssl_session_timeout 1d;\n\
         ssl_session_tickets off;\n\
         # Plain HTTP (http_address) only redirects.\n\
         if ($scheme = http) {{\n    return 301 https://$host{port}$request_uri;\n}}\n"
    )
}

/// What `sync` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synced {
    /// Nginx already had these files.
    Unchanged,
    /// The files were uploaded: the next reload serves them.
    Uploaded,
}

/// Uploads the certificate, key and listener into the Nginx `nginx` when
/// they differ from what it holds (the key readable by root alone: Nginx's
/// master reads it before its workers drop privileges). Nothing to do for
/// a stack without `tls:`.
pub async fn sync(stack: &Stack, nginx: &str, material: &Material) -> anyhow::Result<Synced> {
    let conf = server_conf(&stack.config);
    let digest = fingerprint(material, &conf);
    let marker = format!("# files {digest}\n");
    let held = docker::download_file(&stack.docker, nginx, &format!("{DIR}/{CONF}")).await?;
    if held.is_some_and(|held| held.ends_with(marker.as_bytes())) {
        return Ok(Synced::Unchanged);
    }
    let conf = format!("{conf}{marker}");
    docker::upload_files(
        &stack.docker,
        nginx,
        DIR,
        &[
            (CERTIFICATE, &material.certificate, 0o644),
            (KEY, &material.key, 0o600),
            (CONF, conf.as_bytes(), 0o644),
        ],
    )
    .await
    .map_err(|error| DeployError::Switch(format!("{error:#}")))?;
    Ok(Synced::Uploaded)
}

/// One digest of everything `sync` uploads, kept in the listener file, so
/// a look at one small file says whether all three are current.
fn fingerprint(material: &Material, conf: &str) -> String {
    let mut hash = Sha256::new();
    for part in [&material.certificate[..], &material.key, conf.as_bytes()] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize()
        .iter()
        .take(12)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The line `nginx -T` prints for the listener file: Nginx reads it only
/// when its nginx.conf includes `conf.d/tls*.conf` (images built before
/// wsctl served TLS do not).
pub const INCLUDED: &str = "# configuration file /etc/nginx/conf.d/tls.conf:";
