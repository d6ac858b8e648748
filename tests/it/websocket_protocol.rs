//! RFC 6455 conformance of the WebSocket layer, with hand-written frames:
//! close handshakes, protocol violations and their close codes, pings,
//! fragmentation, and the conformance echo endpoint.

use crate::common;

use common::Server;
use common::raw::RawClient;
use serde_json::Value;

const FIN: u8 = 0x80;
const TEXT: u8 = 0x1;
const CONTINUATION: u8 = 0x0;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;

async fn chat(server: &Server) -> RawClient {
    let mut client = RawClient::connect(&server.addr, "/ws/chat/").await;
    let greeting = client.read_frame().await.expect("greeting");
    let greeting: Value = serde_json::from_slice(&greeting.payload).unwrap();
    assert_eq!(greeting["type"], "connection_established");
    client
}

#[tokio::test]
async fn a_client_close_gets_the_close_reply_and_nothing_else() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client
        .send_frame(FIN | CLOSE, &1000u16.to_be_bytes(), true)
        .await;
    let (close, before) = client.read_until_close().await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(close.expect("close reply").close_code(), Some(1000));
    assert!(client.closed_by_server().await);
}

#[tokio::test]
async fn an_unmasked_client_frame_fails_with_1002() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client
        .send_frame(FIN | TEXT, br#"{"message":1}"#, false)
        .await;
    let (close, before) = client.read_until_close().await;
    assert!(before.is_empty(), "nothing processed: {before:?}");
    assert_eq!(close.expect("close").close_code(), Some(1002));
}

#[tokio::test]
async fn reserved_bits_fail_with_1002() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client
        .send_frame(FIN | 0x40 | TEXT, br#"{"message":1}"#, true)
        .await;
    let (close, _) = client.read_until_close().await;
    assert_eq!(close.expect("close").close_code(), Some(1002));
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_fails_with_1007() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client
        .send_frame(FIN | TEXT, &[0x7b, 0xff, 0xfe, 0x7d], true)
        .await;
    let (close, _) = client.read_until_close().await;
    assert_eq!(close.expect("close").close_code(), Some(1007));
}

#[tokio::test]
async fn a_ping_gets_a_pong_with_the_same_payload() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client.send_frame(FIN | PING, b"are you there", true).await;
    let pong = client.read_frame().await.expect("pong");
    assert_eq!(pong.opcode, 0xA);
    assert_eq!(pong.payload, b"are you there");
}

#[tokio::test]
async fn a_fragmented_message_is_reassembled_around_a_ping() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client.send_frame(TEXT, br#"{"type":"mess"#, true).await;
    client.send_frame(FIN | PING, b"mid", true).await;
    client
        .send_frame(FIN | CONTINUATION, br#"age","message":"joined"}"#, true)
        .await;
    let pong = client.read_frame().await.expect("pong");
    assert_eq!(pong.opcode, 0xA);
    let reply = client.read_frame().await.expect("reply");
    let reply: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(reply["type"], "message_response");
    assert_eq!(reply["message"], "joined");
    assert_eq!(reply["count"], 1);
}

#[tokio::test]
async fn a_continuation_without_a_start_fails_with_1002() {
    let server = Server::start(&[]);
    let mut client = chat(&server).await;
    client.send_frame(FIN | CONTINUATION, b"orphan", true).await;
    let (close, _) = client.read_until_close().await;
    assert_eq!(close.expect("close").close_code(), Some(1002));
}

#[tokio::test]
async fn the_echo_endpoint_is_off_by_default() {
    let server = Server::start(&[]);
    let (code, body) = server.get_json("/ws/echo").await;
    assert_eq!(code, 404);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn the_echo_endpoint_echoes_text_and_binary_with_the_same_limits() {
    let server = Server::start(&[("ECHO_ENDPOINT", "true"), ("MAX_MESSAGE_SIZE", "1000")]);
    let mut client = RawClient::connect(&server.addr, "/ws/echo").await;
    client
        .send_frame(FIN | TEXT, "héllo, not JSON".as_bytes(), true)
        .await;
    let text = client.read_frame().await.unwrap();
    assert_eq!(
        (text.opcode, text.payload.as_slice()),
        (TEXT, "héllo, not JSON".as_bytes())
    );
    client.send_frame(FIN | BINARY, &[0, 1, 2, 255], true).await;
    let binary = client.read_frame().await.unwrap();
    assert_eq!(
        (binary.opcode, binary.payload),
        (BINARY, vec![0, 1, 2, 255])
    );
    client.send_frame(FIN | TEXT, &vec![b'a'; 1001], true).await;
    let (close, _) = client.read_until_close().await;
    assert_eq!(close.expect("close").close_code(), Some(1009));
}
