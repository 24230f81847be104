use super::transmission::tests::Fake;
use super::*;
use crate::time::millis;

fn peer() -> SocketAddr {
    "127.0.0.1:50000".parse().unwrap()
}

fn server(auth: Option<(&str, &str)>) -> RpcServer {
    let config = RpcConfig {
        auth: auth.map(|(u, p)| (u.to_string(), p.to_string())),
        host_allow: vec!["pi.lan".into(), "*.example.org".into()],
    };
    RpcServer::new(config, "SESSION".into())
}

/// Sends `request` on a fresh connection and returns the response text.
fn exchange(s: &mut RpcServer, request: &str) -> String {
    let now = Timestamp::ZERO;
    let id = s.handle_accept(peer(), now);
    s.handle_input(id, request.as_bytes(), now, &mut Fake::two());
    let out = String::from_utf8_lossy(s.pending_output(id)).into_owned();
    let n = out.len();
    s.consume_output(id, n);
    out
}

fn rpc_post(session: &str, extra: &str, body: &str) -> String {
    format!(
        "POST /transmission/rpc HTTP/1.1\r\nHost: 127.0.0.1:9091\r\nX-Transmission-Session-Id: {session}\r\n{extra}\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[test]
fn a_request_without_the_session_id_gets_409_with_it_then_succeeds() {
    let mut s = server(None);
    let body = r#"{"method":"session-get"}"#;
    let first = exchange(&mut s, &rpc_post("wrong", "", body));
    assert!(first.starts_with("HTTP/1.1 409"), "{first}");
    assert!(first.contains("X-Transmission-Session-Id: SESSION\r\n"));
    let second = exchange(&mut s, &rpc_post("SESSION", "", body));
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(second.contains("\"rpc-version\""));
}

#[test]
fn basic_credentials_are_checked_before_anything_else() {
    let mut s = server(Some(("user", "pa:ss")));
    let body = r#"{"method":"session-get"}"#;
    let none = exchange(&mut s, &rpc_post("SESSION", "", body));
    assert!(none.starts_with("HTTP/1.1 401"), "{none}");
    assert!(none.contains("WWW-Authenticate: Basic"));
    let wrong = format!("Authorization: Basic {}\r\n", base64::encode(b"user:nope"));
    assert!(exchange(&mut s, &rpc_post("SESSION", &wrong, body)).starts_with("HTTP/1.1 401"));
    let right = format!("Authorization: Basic {}\r\n", base64::encode(b"user:pa:ss"));
    assert!(exchange(&mut s, &rpc_post("SESSION", &right, body)).starts_with("HTTP/1.1 200"));
    assert!(exchange(&mut s, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").starts_with("HTTP/1.1 401"));
}

#[test]
fn hosts_other_than_ip_literals_localhost_and_allowed_names_get_421() {
    let mut s = server(None);
    for (host, ok) in [
        ("127.0.0.1:9091", true),
        ("[::1]:9091", true),
        ("localhost:9091", true),
        ("LOCALHOST", true),
        ("pi.lan:9091", true),
        ("a.example.org", true),
        ("example.org", false),
        ("evil.com:9091", false),
        ("127.0.0.1.evil.com", false),
        ("[not-an-ip]:1", false),
    ] {
        let text = exchange(&mut s, &format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n"));
        assert_eq!(text.starts_with("HTTP/1.1 200"), ok, "{host}: {text}");
        if !ok {
            assert!(text.starts_with("HTTP/1.1 421"), "{host}");
        }
    }
}

#[test]
fn the_page_is_served_and_unknown_paths_are_404() {
    let mut s = server(None);
    let page = exchange(&mut s, "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    assert!(page.contains("text/html") && page.contains("<title>rill"), "{page}");
    assert!(exchange(&mut s, "GET /etc/passwd HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    let get_rpc = exchange(&mut s, "GET /transmission/rpc HTTP/1.1\r\nX-Transmission-Session-Id: SESSION\r\n\r\n");
    assert!(get_rpc.starts_with("HTTP/1.1 405"), "{get_rpc}");
}

#[test]
fn pipelined_requests_are_all_answered_in_order_and_close_is_honoured() {
    let mut s = server(None);
    let now = Timestamp::ZERO;
    let id = s.handle_accept(peer(), now);
    let body = r#"{"method":"session-stats","tag":1}"#;
    let two = format!("{}{}", rpc_post("SESSION", "", body), rpc_post("SESSION", "Connection: close\r\n", body));
    // Byte by byte: framing must not depend on how reads split.
    for b in two.as_bytes() {
        s.handle_input(id, std::slice::from_ref(b), now, &mut Fake::two());
    }
    let out = String::from_utf8_lossy(s.pending_output(id)).into_owned();
    assert_eq!(out.matches("HTTP/1.1 200").count(), 2, "{out}");
    assert!(out.ends_with("}") && out.contains("Connection: close"));
    s.consume_output(id, out.len());
    assert_eq!(s.poll_close(), Some(id), "closed once written");
    assert_eq!(s.connections(), 0);
}

#[test]
fn expect_100_continue_is_answered_before_the_body() {
    let mut s = server(None);
    let now = Timestamp::ZERO;
    let id = s.handle_accept(peer(), now);
    let body = r#"{"method":"session-get"}"#;
    let full = rpc_post("SESSION", "Expect: 100-continue\r\n", body);
    let head_len = full.find("\r\n\r\n").unwrap() + 4;
    s.handle_input(id, &full.as_bytes()[..head_len], now, &mut Fake::two());
    assert_eq!(s.pending_output(id), http::CONTINUE);
    s.consume_output(id, http::CONTINUE.len());
    s.handle_input(id, &full.as_bytes()[head_len..], now, &mut Fake::two());
    assert!(s.pending_output(id).starts_with(b"HTTP/1.1 200"));
}

#[test]
fn a_trickled_request_is_cut_off_at_its_deadline_and_an_idle_one_closed() {
    let mut s = server(None);
    let t0 = Timestamp::ZERO;
    let slow = s.handle_accept(peer(), t0);
    let idle = s.handle_accept(peer(), t0);
    s.handle_input(slow, b"POST /transmission/rpc HTTP/1.1\r\nHos", t0, &mut Fake::two());
    assert_eq!(s.poll_timeout(), Some(t0 + REQUEST_DEADLINE));
    s.handle_timeout(t0 + REQUEST_DEADLINE);
    assert!(s.pending_output(slow).starts_with(b"HTTP/1.1 408"));
    // More bytes do not bring it back.
    s.handle_input(slow, b"t: x\r\n\r\n", t0 + REQUEST_DEADLINE, &mut Fake::two());
    assert!(String::from_utf8_lossy(s.pending_output(slow)).matches("HTTP/1.1").count() == 1);
    s.handle_timeout(t0 + IDLE_DEADLINE + millis(1));
    let mut closed: Vec<RpcConnId> = std::iter::from_fn(|| s.poll_close()).collect();
    closed.sort_by_key(|c| c.0);
    assert_eq!(closed, [slow, idle]);
}

#[test]
fn hundreds_of_connections_keep_the_server_at_its_cap_dropping_the_least_active() {
    let mut s = server(None);
    let first = s.handle_accept(peer(), Timestamp::ZERO);
    for i in 1..500 {
        s.handle_accept(peer(), Timestamp::ZERO + millis(i));
    }
    assert_eq!(s.connections(), MAX_CONNECTIONS);
    let closed: Vec<RpcConnId> = std::iter::from_fn(|| s.poll_close()).collect();
    assert_eq!(closed.len(), 500 - MAX_CONNECTIONS);
    assert!(closed.contains(&first));
    // A fresh client is still served.
    assert!(exchange(&mut s, "GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
}

#[test]
fn oversized_and_garbage_requests_are_refused_and_closed() {
    let mut s = server(None);
    let big = format!("POST /transmission/rpc HTTP/1.1\r\nContent-Length: {}\r\n\r\n", 100 << 20);
    assert!(exchange(&mut s, &big).starts_with("HTTP/1.1 413"));
    assert!(exchange(&mut s, "\x16\x03\x01garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
    let closed: Vec<RpcConnId> = std::iter::from_fn(|| s.poll_close()).collect();
    assert_eq!(closed.len(), 2);
    assert_eq!(s.buffered, 0, "nothing is held for closed connections");
}
