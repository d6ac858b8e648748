//! `wsctl build`: package this very binary into a `FROM scratch` image.
//!
//! The context is two files: the running executable and a Dockerfile with a
//! `HEALTHCHECK` that runs `wsctl probe` inside the container, so that the
//! engine itself reports health (also when it is remote). A dynamically
//! linked binary would not start in an empty image, so it is refused with
//! the command that builds a static one.

use std::collections::HashMap;

use anyhow::Context;

use crate::docker;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("WSCTL_GIT_REVISION");

/// How to build a binary this command accepts.
pub const STATIC_BUILD: &str = "RUSTFLAGS='-C target-feature=+crt-static' \
cargo build --release --target x86_64-unknown-linux-gnu";

const DOCKERFILE: &str = r#"FROM scratch
COPY wsctl /wsctl
ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=2s --timeout=2s --start-period=1s --retries=3 CMD ["/wsctl", "probe"]
ENTRYPOINT ["/wsctl"]
CMD ["serve"]
"#;

/// Builds `tag` from the running executable; returns the image id.
pub async fn build(tag: &str) -> anyhow::Result<String> {
    let executable = std::env::current_exe().context("locating the running wsctl")?;
    let binary =
        std::fs::read(&executable).with_context(|| format!("reading {}", executable.display()))?;
    if needs_interpreter(&binary) {
        anyhow::bail!(
            "{} is dynamically linked and cannot run in a FROM scratch image; build a static one with: {STATIC_BUILD}",
            executable.display()
        );
    }
    let context = build_context(&binary)?;
    let labels = HashMap::from([
        (
            "org.opencontainers.image.title".to_string(),
            "wsctl".to_string(),
        ),
        (
            "org.opencontainers.image.version".to_string(),
            VERSION.to_string(),
        ),
        (
            "org.opencontainers.image.revision".to_string(),
            REVISION.to_string(),
        ),
        (
            "org.opencontainers.image.created".to_string(),
            crate::time::now_rfc3339(),
        ),
    ]);
    let engine = docker::connect().await?;
    docker::build_image(&engine, tag, &labels, context).await
}

/// The build context as a tar archive: the Dockerfile and the binary.
fn build_context(binary: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    for (name, contents, mode) in [
        ("Dockerfile", DOCKERFILE.as_bytes(), 0o644),
        ("wsctl", binary, 0o755),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        archive.append_data(&mut header, name, contents)?;
    }
    Ok(archive.into_inner()?)
}

/// True when an ELF executable names a program interpreter (`PT_INTERP`),
/// i.e. needs the dynamic loader and shared libraries to start.
pub fn needs_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    let read_u16 = |at: usize| {
        elf.get(at..at + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let read_u64 = |at: usize| {
        elf.get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 8]| u64::from_le_bytes(b) as usize)
    };
    let is_elf64 = elf.starts_with(b"\x7fELF") && elf.get(4) == Some(&2);
    let (Some(table), Some(entry_size), Some(entries)) =
        (read_u64(0x20), read_u16(0x36), read_u16(0x38))
    else {
        return true;
    };
    if !is_elf64 {
        return true;
    }
    (0..entries).any(|index| {
        let at = table + index * entry_size;
        elf.get(at..at + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            == Some(PT_INTERP)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_binary_is_dynamic_and_garbage_is_refused() {
        let this = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        // cargo test builds without crt-static: the loader is named.
        assert!(needs_interpreter(&this));
        assert!(needs_interpreter(b"not an elf file at all, far too short"));
    }

    #[test]
    fn a_static_elf_header_without_interp_passes() {
        // A minimal ELF64 header with one PT_LOAD program header.
        let mut elf = vec![0u8; 64 + 56];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes());
        elf[64..68].copy_from_slice(&1u32.to_le_bytes());
        assert!(!needs_interpreter(&elf));
        elf[64..68].copy_from_slice(&3u32.to_le_bytes());
        assert!(needs_interpreter(&elf));
    }

    #[test]
    fn the_context_holds_the_dockerfile_and_the_binary() {
        let context = build_context(b"binary").unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "wsctl"]);
    }
}
