//! A test's own log file, kept only when the test fails: a flaky test's
//! failure is read from what it wrote, not guessed at from its last line.
//! Files live in `target/tmp/test-logs/` (cargo's directory for integration
//! tests' scratch files); `scripts/test.sh` prints them when a run fails.

use std::io::Write;
use std::path::PathBuf;

pub struct TestLog {
    path: PathBuf,
    file: Option<std::fs::File>,
}

impl TestLog {
    /// Starts `NAME.log` afresh.
    pub fn new(name: &str) -> TestLog {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("test-logs");
        let path = dir.join(format!("{name}.log"));
        let file = std::fs::create_dir_all(&dir)
            .and_then(|()| std::fs::File::create(&path))
            .ok();
        TestLog { path, file }
    }

    /// Writes `text` and a newline (and flushes: a killed test keeps it).
    pub fn line(&mut self, text: &str) {
        if let Some(file) = &mut self.file {
            let _ = writeln!(file, "{text}");
            let _ = file.flush();
        }
    }

    /// Where the log is.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for TestLog {
    /// A test that passed leaves no log behind.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
