//! What every answer of the service shares: the request id and colour
//! headers, and the JSON error body. Both the routes (`http.rs`) and the
//! upgrade (`upgrade.rs`) answer with them.

use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

/// The header that carries a request's id, echoed on its answer and logged.
pub const REQUEST_ID: &str = "x-request-id";
pub use crate::shared::protocol::COLOR_HEADER;

/// A JSON body `{"error": message}` with `status`.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    warp::reply::with_status(warp::reply::json(&json!({ "error": message })), status)
        .into_response()
}
