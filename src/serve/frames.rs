//! The JSON frames of the contract: what the server sends and how a client
//! frame is read. Pure functions, tested here.
//!
//! The client's `message` value travels as a borrowed [`RawValue`]: it is
//! echoed byte for byte ("unchanged") and never re-encoded.
//!
//! A `message` or `broadcast` frame may carry an `id` (1 to 64 characters)
//! that makes a resend harmless: the backend stores it with the count, and
//! every reply to a frame with an id echoes it. Replies to frames without
//! one have no `id` and no `duplicate` field, exactly as before ids existed.

use std::borrow::Cow;

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
        /// Seconds a message id is remembered (`DEDUPE_WINDOW`).
        dedupe_window: serde_json::Number,
    },
    MessageResponse {
        count: u64,
        message: &'a RawValue,
        connection_id: Uuid,
        timestamp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// Present exactly when `id` is: `true` when the id was seen
        /// before (nothing was counted; `count` is the original answer's).
        #[serde(skip_serializing_if = "Option::is_none")]
        duplicate: Option<bool>,
    },
    Broadcast {
        from: Uuid,
        message: &'a RawValue,
        timestamp: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
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
        /// The refused frame's id, when it had a valid one.
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        /// `true` on `unavailable`: nothing was counted, send the same
        /// frame again (with its id, a resend can never count twice).
        #[serde(skip_serializing_if = "Option::is_none")]
        retry: Option<bool>,
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

/// The longest message id, in characters.
pub const MAX_ID_CHARS: usize = 64;

/// What a client text frame asks for.
#[derive(Debug)]
pub enum ClientRequest<'a> {
    /// `{"type": "message", "message": ...}` or the classic `{"message": ...}`.
    Message(Counted<'a>),
    /// `{"type": "broadcast", "message": ...}`.
    Broadcast(Counted<'a>),
    /// `{"type": "bye"}`.
    Bye,
}

impl ClientRequest<'_> {
    /// The frame's message id, when it gave one.
    pub fn id(&self) -> Option<&str> {
        match self {
            ClientRequest::Message(counted) | ClientRequest::Broadcast(counted) => {
                counted.id.as_deref()
            }
            ClientRequest::Bye => None,
        }
    }
}

/// A frame that counts: its value, and the sender's id when it gave one.
#[derive(Debug)]
pub struct Counted<'a> {
    pub message: &'a RawValue,
    pub id: Option<Cow<'a, str>>,
}

/// A refused client frame: the `error` code, a sentence for `detail`, and
/// the frame's id when it had a valid one (echoed in the `error`).
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub detail: String,
    pub id: Option<String>,
}

#[derive(Deserialize)]
struct RawClientFrame<'a> {
    #[serde(rename = "type", default, borrow)]
    kind: Option<Cow<'a, str>>,
    /// `Some` whenever the field is present, `null` included.
    #[serde(default, borrow, deserialize_with = "present")]
    message: Option<&'a RawValue>,
    /// Any JSON value here: a wrong one is refused by name, not as a frame
    /// that is no object.
    #[serde(default, borrow, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

/// A message id: a JSON string of 1 to [`MAX_ID_CHARS`] characters.
fn message_id(raw: &RawValue) -> Result<Cow<'_, str>, Refusal> {
    let id: Result<Cow<str>, _> = serde_json::from_str(raw.get());
    match id {
        Ok(id) if (1..=MAX_ID_CHARS).contains(&id.chars().count()) => Ok(id),
        _ => Err(Refusal {
            code: ErrorCode::InvalidMessage,
            detail: format!("\"id\" must be a string of 1 to {MAX_ID_CHARS} characters"),
            id: None,
        }),
    }
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Reads one client text frame.
pub fn parse_client_frame(text: &str) -> Result<ClientRequest<'_>, Refusal> {
    let not_json = |error: serde_json::Error| Refusal {
        code: ErrorCode::InvalidJson,
        detail: format!("the frame is not valid JSON: {error}"),
        id: None,
    };
    let not_an_object = || Refusal {
        code: ErrorCode::InvalidMessage,
        detail: "a frame must be a JSON object with a string \"type\"".into(),
        id: None,
    };
    // serde would read `null` as an object of defaults, and stops at the
    // first data error without looking at the rest of the text: a frame
    // that is not an object is `invalid_message` only when it is JSON.
    let is_json = || serde_json::from_str::<serde::de::IgnoredAny>(text);
    if !text.trim_start().starts_with('{') {
        return Err(match is_json() {
            Ok(_) => not_an_object(),
            Err(error) => not_json(error),
        });
    }
    let frame: RawClientFrame = serde_json::from_str(text).map_err(|error| {
        if error.is_data() && is_json().is_ok() {
            not_an_object()
        } else {
            not_json(error)
        }
    })?;
    let counted = |kind: &str| {
        let id = frame.id.map(message_id).transpose()?;
        match frame.message {
            Some(message) => Ok(Counted { message, id }),
            None => Err(Refusal {
                code: ErrorCode::InvalidMessage,
                detail: format!("a \"{kind}\" frame needs a \"message\" field"),
                id: id.map(Cow::into_owned),
            }),
        }
    };
    match frame.kind.as_deref() {
        None | Some("message") => counted("message").map(ClientRequest::Message),
        Some("broadcast") => counted("broadcast").map(ClientRequest::Broadcast),
        Some("bye") => Ok(ClientRequest::Bye),
        Some(other) => Err(Refusal {
            code: ErrorCode::InvalidMessage,
            detail: format!("unknown frame type \"{other}\" (expected message, broadcast or bye)"),
            id: None,
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
        let Ok(ClientRequest::Message(counted)) =
            parse_client_frame(r#"{"type":"message","message":{"b": 1.50, "a":[1]}}"#)
        else {
            panic!("not a message");
        };
        assert_eq!(counted.message.get(), r#"{"b": 1.50, "a":[1]}"#);
        assert!(counted.id.is_none());
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
            Ok(ClientRequest::Message(counted)) if counted.message.get() == "null"
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
    fn an_id_is_a_string_of_1_to_64_characters() {
        let id_of = |text: &str| match parse_client_frame(text) {
            Ok(ClientRequest::Message(counted) | ClientRequest::Broadcast(counted)) => {
                counted.id.map(Cow::into_owned)
            }
            other => panic!("{text}: {other:?}"),
        };
        assert_eq!(id_of(r#"{"message":1,"id":"a-1"}"#).as_deref(), Some("a-1"));
        assert_eq!(
            id_of(r#"{"type":"broadcast","message":1,"id":"\u00e9t\u00e9"}"#).as_deref(),
            Some("été")
        );
        // 64 characters of two bytes each: 128 bytes, still valid.
        let long = "é".repeat(64);
        assert!(id_of(&format!(r#"{{"message":1,"id":"{long}"}}"#)).is_some());
        for bad in [
            r#"{"message":1,"id":""}"#,
            r#"{"message":1,"id":7}"#,
            r#"{"message":1,"id":null}"#,
            r#"{"message":1,"id":["a"]}"#,
        ] {
            assert_eq!(code(bad), ErrorCode::InvalidMessage, "{bad}");
        }
        let too_long = "x".repeat(65);
        assert_eq!(
            code(&format!(r#"{{"message":1,"id":"{too_long}"}}"#)),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn a_refusal_of_a_frame_with_a_valid_id_echoes_it() {
        let refusal = parse_client_frame(r#"{"type":"broadcast","id":"k"}"#).unwrap_err();
        assert_eq!(refusal.id.as_deref(), Some("k"));
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

    mod properties {
        use super::super::*;
        use proptest::prelude::*;
        use serde_json::Value;

        /// Any JSON value, a few levels deep.
        fn json_value() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                "[ -~]{0,12}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                    prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                        .prop_map(|map| Value::Object(map.into_iter().collect())),
                ]
            })
        }

        proptest! {
            /// Any text at all: no panic, and the refusal code agrees with
            /// what a JSON parser makes of it.
            #[test]
            fn any_text_is_either_a_request_or_the_right_refusal(text in "\\PC{0,64}") {
                match parse_client_frame(&text) {
                    Ok(_) => {
                        let value: Value = serde_json::from_str(&text).expect("accepted text is JSON");
                        prop_assert!(value.is_object());
                    }
                    Err(refusal) if refusal.code == ErrorCode::InvalidJson => {
                        prop_assert!(serde_json::from_str::<Value>(&text).is_err());
                    }
                    Err(refusal) => {
                        prop_assert_eq!(refusal.code, ErrorCode::InvalidMessage);
                        prop_assert!(serde_json::from_str::<Value>(&text).is_ok());
                    }
                }
            }

            /// A well-formed message or broadcast frame carries its value
            /// unchanged; a non-object is invalid_message.
            #[test]
            fn framed_values_round_trip(value in json_value(), broadcast in any::<bool>()) {
                let kind = if broadcast { "broadcast" } else { "message" };
                let text = serde_json::json!({"type": kind, "message": value}).to_string();
                let carried = match parse_client_frame(&text) {
                    Ok(ClientRequest::Message(counted)) if !broadcast => counted.message,
                    Ok(ClientRequest::Broadcast(counted)) if broadcast => counted.message,
                    other => return Err(TestCaseError::fail(format!("{text}: {other:?}"))),
                };
                prop_assert_eq!(serde_json::from_str::<Value>(carried.get()).unwrap(), value.clone());
                if !value.is_object() {
                    let bare = value.to_string();
                    prop_assert_eq!(parse_client_frame(&bare).unwrap_err().code, ErrorCode::InvalidMessage);
                }
            }
        }
    }
}
