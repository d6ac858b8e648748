//! The JSON frames of the contract: what the server sends and how a client
//! frame is read. Pure functions, tested here.
//!
//! The client's `message` value travels as a borrowed [`RawValue`]: it is
//! echoed byte for byte ("unchanged") and never re-encoded.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// Every frame the server sends, tagged by `type`.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    ConnectionEstablished {
        connection_id: Uuid,
        session_uuid: Uuid,
        count: u64,
        resumed: bool,
        color: &'a str,
        version: &'a str,
        /// Whole seconds as an integer, fractions as a float.
        heartbeat_interval: serde_json::Number,
    },
    MessageResponse {
        count: u64,
        message: &'a RawValue,
        connection_id: Uuid,
        timestamp: &'a str,
    },
    Broadcast {
        from: Uuid,
        message: &'a RawValue,
        timestamp: &'a str,
    },
    Heartbeat {
        timestamp: &'a str,
        color: &'a str,
    },
    Goodbye {
        count: u64,
        reason: GoodbyeReason,
        connection_id: Uuid,
    },
    Error {
        code: ErrorCode,
        detail: &'a str,
    },
}

impl ServerFrame<'_> {
    /// The frame as JSON text. Serializing these types cannot fail (no maps
    /// with non-string keys, no failing `Serialize` impls).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|error| {
            format!(r#"{{"type":"error","code":"internal","detail":"{error}"}}"#)
        })
    }

    /// The `type` label used in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::ConnectionEstablished { .. } => "connection_established",
            ServerFrame::MessageResponse { .. } => "message_response",
            ServerFrame::Broadcast { .. } => "broadcast",
            ServerFrame::Heartbeat { .. } => "heartbeat",
            ServerFrame::Goodbye { .. } => "goodbye",
            ServerFrame::Error { .. } => "error",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodbyeReason {
    ClientRequest,
    ServerShutdown,
}

/// Seconds as JSON: `30` for whole seconds, `0.5` otherwise.
pub fn seconds_number(duration: std::time::Duration) -> serde_json::Number {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().into()
    } else {
        serde_json::Number::from_f64(duration.as_secs_f64()).unwrap_or_else(|| 0.into())
    }
}

/// The `code` of an `error` frame; also the `type` label of
/// `websocket_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidJson,
    InvalidMessage,
    UnsupportedFrame,
    RateLimited,
    Unavailable,
    /// A broadcast larger than `BROADCAST_MAX_SIZE`.
    MessageTooLarge,
    /// A broadcast from a connection without a valid token while
    /// `BROADCAST_REQUIRE_AUTH` is on.
    Unauthorized,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidJson => "invalid_json",
            ErrorCode::InvalidMessage => "invalid_message",
            ErrorCode::UnsupportedFrame => "unsupported_frame",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::Unauthorized => "unauthorized",
        }
    }
}

/// What a client text frame asks for.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    /// `{"type": "message", "message": ...}` or the classic `{"message": ...}`.
    Message(&'a RawValue),
    /// `{"type": "broadcast", "message": ...}`.
    Broadcast(&'a RawValue),
    /// `{"type": "bye"}`.
    Bye,
}

/// A refused client frame: the `error` code and a sentence for `detail`.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
}

#[derive(Deserialize)]
struct RawClientFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    /// `Some` whenever the field is present, `null` included.
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Reads one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, Refusal> {
    let frame: RawClientFrame = serde_json::from_str(text).map_err(|error| {
        if error.is_data() {
            Refusal {
                code: ErrorCode::InvalidMessage,
                detail: "a frame must be a JSON object with a string \"type\"".into(),
            }
        } else {
            Refusal {
                code: ErrorCode::InvalidJson,
                detail: format!("the frame is not valid JSON: {error}"),
            }
        }
    })?;
    let missing_message = |kind: &str| Refusal {
        code: ErrorCode::InvalidMessage,
        detail: format!("a \"{kind}\" frame needs a \"message\" field"),
    };
    match frame.kind.as_deref() {
        None | Some("message") => frame
            .message
            .map(ClientRequest::Message)
            .ok_or_else(|| missing_message("message")),
        Some("broadcast") => frame
            .message
            .map(ClientRequest::Broadcast)
            .ok_or_else(|| missing_message("broadcast")),
        Some("bye") => Ok(ClientRequest::Bye),
        Some(other) => Err(Refusal {
            code: ErrorCode::InvalidMessage,
            detail: format!("unknown frame type \"{other}\" (expected message, broadcast or bye)"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client_frame(text).unwrap_err().code
    }

    #[test]
    fn message_keeps_its_value_byte_for_byte() {
        let Ok(ClientRequest::Message(raw)) =
            parse_client_frame(r#"{"type":"message","message":{"b": 1.50, "a":[1]}}"#)
        else {
            panic!("not a message");
        };
        assert_eq!(raw.get(), r#"{"b": 1.50, "a":[1]}"#);
    }

    #[test]
    fn classic_frame_without_type_is_a_message() {
        assert!(matches!(
            parse_client_frame(r#"{"message":"hi"}"#),
            Ok(ClientRequest::Message(_))
        ));
    }

    #[test]
    fn null_is_a_message_value_but_absence_is_not() {
        assert!(matches!(
            parse_client_frame(r#"{"type":"message","message":null}"#),
            Ok(ClientRequest::Message(raw)) if raw.get() == "null"
        ));
        assert_eq!(code(r#"{"type":"message"}"#), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"broadcast"}"#), ErrorCode::InvalidMessage);
    }

    #[test]
    fn refusals_have_the_contract_codes() {
        assert_eq!(code("not json"), ErrorCode::InvalidJson);
        assert_eq!(code("{\"type\":"), ErrorCode::InvalidJson);
        assert_eq!(code("[1,2]"), ErrorCode::InvalidMessage);
        assert_eq!(code("42"), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"dance","message":1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"type":7,"message":1}"#), ErrorCode::InvalidMessage);
    }

    #[test]
    fn bye_and_broadcast() {
        assert!(matches!(
            parse_client_frame(r#"{"type":"bye"}"#),
            Ok(ClientRequest::Bye)
        ));
        assert!(matches!(
            parse_client_frame(r#"{"type":"broadcast","message":[1]}"#),
            Ok(ClientRequest::Broadcast(_))
        ));
    }

    #[test]
    fn server_frames_are_tagged_by_type() {
        let frame = ServerFrame::Goodbye {
            count: 3,
            reason: GoodbyeReason::ServerShutdown,
            connection_id: Uuid::nil(),
        };
        let json: serde_json::Value = serde_json::from_str(&frame.to_json()).unwrap();
        assert_eq!(json["type"], "goodbye");
        assert_eq!(json["reason"], "server_shutdown");
        assert_eq!(json["count"], 3);
    }
}
