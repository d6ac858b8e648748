//! `wsctl build`: package this very binary into a `FROM scratch` image.
//!
//! The context is the running executable with its debug info stripped
//! (`objcopy --strip-debug`, from binutils, which every Rust toolchain's
//! linker brings), a Dockerfile with a `HEALTHCHECK` that runs `wsctl probe`
//! inside the container (so the engine itself reports health, also when it
//! is remote), and, for a dynamically linked binary (`cargo build`, `cargo
//! install`), its ELF interpreter and every shared library `ldd` names, at
//! the same paths. A static binary is used as it is. The image holds no
//! shell and no package manager.

use std::collections::HashMap;

use anyhow::Context;

use crate::deploy::docker;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const REVISION: &str = env!("BUILD_GIT_REVISION");

/// What runs the service in every image: the root Dockerfile ends with
/// these very lines (a test checks it), and `wsctl build` puts them after
/// its own `FROM scratch` and `COPY`.
pub const RUNTIME_STANZA: &str = r#"ENV HOST=0.0.0.0 PORT=8000
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=2s --timeout=2s --start-period=1s --retries=3 CMD ["/wsctl", "probe"]
ENTRYPOINT ["/wsctl"]
CMD ["serve"]
"#;

/// `wsctl build`'s Dockerfile: the context (binary, libraries) as it is.
fn dockerfile() -> String {
    format!("FROM scratch\nCOPY . /\n{RUNTIME_STANZA}")
}

/// Files of the context that stay out of the image.
const DOCKERIGNORE: &str = "Dockerfile\n.dockerignore\n";

/// Builds `tag` from the running executable; returns the image id.
pub async fn build(tag: &str) -> anyhow::Result<String> {
    let executable = std::env::current_exe().context("locating the running wsctl")?;
    let original =
        std::fs::read(&executable).with_context(|| format!("reading {}", executable.display()))?;
    let libraries = if needs_interpreter(&original) {
        shared_libraries(&executable)?
    } else {
        Vec::new()
    };
    let binary = strip_debug(&executable).unwrap_or_else(|why| {
        eprintln!("wsctl: keeping debug info in the image: {why}");
        original
    });
    let context = build_context(&binary, &libraries)?;
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
            crate::shared::time::now_rfc3339(),
        ),
    ]);
    let engine = docker::connect().await?;
    docker::build_image(&engine, tag, &labels, context).await
}

/// The executable without its debug info, through binutils' objcopy.
fn strip_debug(executable: &std::path::Path) -> Result<Vec<u8>, String> {
    let out = std::env::temp_dir().join(format!("wsctl-stripped-{}", std::process::id()));
    let ran = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(executable)
        .arg(&out)
        .output();
    let result = match ran {
        Ok(output) if output.status.success() => {
            std::fs::read(&out).map_err(|error| format!("reading the stripped copy: {error}"))
        }
        Ok(output) => Err(format!(
            "objcopy failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(error) => Err(format!("objcopy (binutils) is not available: {error}")),
    };
    let _ = std::fs::remove_file(&out);
    result
}

/// The ELF interpreter and the shared libraries a dynamic executable
/// loads, as `ldd` resolves them on this machine (absolute paths).
fn shared_libraries(executable: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let output = std::process::Command::new("ldd")
        .arg(executable)
        .output()
        .context("running ldd to find the shared libraries of a dynamically linked wsctl")?;
    anyhow::ensure!(
        output.status.success(),
        "ldd {}: {}",
        executable.display(),
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let listing = String::from_utf8_lossy(&output.stdout);
    let mut libraries = Vec::new();
    for path in library_paths(&listing) {
        // The real file behind a symlink, stored under the name asked for.
        let contents = std::fs::read(&path).with_context(|| format!("reading {path}"))?;
        libraries.push((path, contents));
    }
    anyhow::ensure!(
        !libraries.is_empty(),
        "ldd named no libraries for a dynamically linked {}",
        executable.display()
    );
    Ok(libraries)
}

/// The absolute paths in `ldd` output: `libc.so.6 => /lib/.../libc.so.6
/// (0x..)` and the interpreter's `/lib64/ld-linux-x86-64.so.2 (0x..)`.
fn library_paths(listing: &str) -> Vec<String> {
    let mut paths: Vec<String> = listing
        .lines()
        .filter_map(|line| {
            let target = match line.split_once("=>") {
                Some((_, resolved)) => resolved,
                None => line,
            };
            target
                .split_whitespace()
                .next()
                .filter(|path| path.starts_with('/'))
                .map(str::to_string)
        })
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

/// The build context as a tar archive: the Dockerfile, the binary as
/// `/wsctl`, and each library at its own path.
fn build_context(binary: &[u8], libraries: &[(String, Vec<u8>)]) -> anyhow::Result<Vec<u8>> {
    let dockerfile = dockerfile();
    let mut archive = tar::Builder::new(Vec::new());
    let mut files: Vec<(&str, &[u8], u32)> = vec![
        ("Dockerfile", dockerfile.as_bytes(), 0o644),
        (".dockerignore", DOCKERIGNORE.as_bytes(), 0o644),
        ("wsctl", binary, 0o755),
    ];
    for (path, contents) in libraries {
        files.push((path.trim_start_matches('/'), contents, 0o755));
    }
    for (name, contents, mode) in files {
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
    fn the_context_holds_the_dockerfile_the_binary_and_its_libraries() {
        let libraries = vec![("/lib64/ld-linux-x86-64.so.2".to_string(), b"ld".to_vec())];
        let context = build_context(b"binary", &libraries).unwrap();
        let mut archive = tar::Archive::new(context.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|entry| entry.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "Dockerfile",
                ".dockerignore",
                "wsctl",
                "lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn ldd_output_gives_the_interpreter_and_every_library() {
        let listing = "\tlinux-vdso.so.1 (0x00007ffd)\n\tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f)\n\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f)\n\t/lib64/ld-linux-x86-64.so.2 (0x00007f)\n";
        assert_eq!(
            library_paths(listing),
            [
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib64/ld-linux-x86-64.so.2"
            ]
        );
    }

    #[test]
    fn the_root_dockerfile_ends_with_the_same_runtime_stanza() {
        let root = include_str!("../../Dockerfile");
        assert!(
            root.ends_with(RUNTIME_STANZA),
            "Dockerfile and RUNTIME_STANZA differ"
        );
    }
}
