//! Images of WebSocket services that are not ours, built here from Debian's
//! packages (no registry): each is the program, the libraries `ldd` lists
//! and the app's files, FROM scratch: no shell, no wsctl. The sources and
//! their build scripts are in tests/apps/.

use std::path::Path;
use std::process::Command;

use super::docker::{BuiltImages, explain};

/// Builds the image of tests/apps/APP with its `build.sh` as `tag`,
/// removed with `images`.
fn build_app(images: &mut BuiltImages, app: &str, tag: &str) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(app)
        .join("build.sh");
    images.adopt(tag);
    let built = Command::new("bash")
        .arg(script)
        .arg(tag)
        .output()
        .expect("bash");
    assert!(built.status.success(), "{}", explain(&built));
    tag.to_string()
}

/// The Node service of tests/apps/node-ws (Debian's `ws` library): `/up`,
/// an echo WebSocket on `/echo/` that names its colour, 1001 to every
/// socket on SIGTERM. Tagged `tag`, removed with `images`.
pub fn node_ws_image(images: &mut BuiltImages, tag: &str) -> String {
    build_app(images, "node-ws", tag)
}

/// The Python service of tests/apps/python-asgi (Starlette under uvicorn):
/// the contract of docs/protocol.md on `/ws/chat/`, counts in Redis,
/// goodbye and 1001 on SIGTERM. Tagged `tag`, removed with `images`.
pub fn python_asgi_image(images: &mut BuiltImages, tag: &str) -> String {
    build_app(images, "python-asgi", tag)
}
