//! What the service and the deploy tool must agree on over the wire,
//! beside the frames of `docs/protocol.md`.

/// Every answer of the service names the colour of the process that gave
/// it, so a deploy tool can tell through a proxy which colour answered,
/// from a public path.
pub const COLOR_HEADER: &str = "x-wsctl-color";
