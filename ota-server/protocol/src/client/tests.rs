use std::time::Duration;

use super::ErrorKind;
use crate::device::parse_retry_after;

#[test]
fn status_kinds() {
    assert_eq!(ErrorKind::for_status(401), ErrorKind::Reauthenticate);
    for retry in [408, 425, 429, 500, 502, 503, 504, 599] {
        assert_eq!(ErrorKind::for_status(retry), ErrorKind::Retry, "{retry}");
    }
    for give_up in [400, 403, 404, 409, 413, 422, 300] {
        assert_eq!(
            ErrorKind::for_status(give_up),
            ErrorKind::GiveUp,
            "{give_up}"
        );
    }
}

#[test]
fn retry_after_is_delay_seconds() {
    assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
    assert_eq!(parse_retry_after(" 0 "), Some(Duration::ZERO));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    assert_eq!(parse_retry_after("-1"), None);
}

#[cfg(feature = "client")]
mod live {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::TcpListener;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use crate::client::{ApiClient, ClientOptions, ErrorKind};
    use crate::device::{EnrollRequest, EnrollResponse};

    /// A one-shot HTTP server on 127.0.0.1: answers each connection with the next canned response and hands
    /// back the requests it saw (head and body).
    fn serve(responses: Vec<String>) -> (String, JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for response in responses {
                let (mut stream, _) = listener.accept().unwrap();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut head = String::new();
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    head.push_str(&line);
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                seen.push(format!("{head}{}", String::from_utf8_lossy(&body)));
                stream.write_all(response.as_bytes()).unwrap();
            }
            seen
        });
        (base, handle)
    }

    fn response(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n{body}",
            body.len()
        )
    }

    fn client(base: &str) -> ApiClient {
        let mut options = ClientOptions::new(base);
        options.token = Some("secret-token".into());
        options.timeout = Duration::from_secs(10);
        ApiClient::new(&options).unwrap()
    }

    fn enroll_request() -> EnrollRequest {
        serde_json::from_value(serde_json::json!({
            "enrollment_secret": "s",
            "device_id": "robot-1",
            "compatible": "acme-robot",
            "request_id": "e1",
        }))
        .unwrap()
    }

    #[test]
    fn success_decodes_json_and_sends_the_token() {
        let (base, server) = serve(vec![response(
            "200 OK",
            "",
            r#"{"device_id":"robot-1","token":"t-1","poll_interval_secs":60,"poll_jitter_secs":5}"#,
        )]);
        let answer: Result<EnrollResponse, _> =
            client(&format!("{base}/")).enroll(&enroll_request());
        let seen = server.join().unwrap();
        let answer = answer.unwrap();
        assert_eq!(answer.token, "t-1");
        assert!(
            seen[0].starts_with("POST /api/devices/enroll HTTP/1.1"),
            "{}",
            seen[0]
        );
        assert!(
            seen[0].contains("authorization: Bearer secret-token"),
            "{}",
            seen[0]
        );
        assert!(seen[0].contains(r#""device_id":"robot-1""#), "{}", seen[0]);
    }

    #[test]
    fn error_body_becomes_the_message() {
        let (base, server) = serve(vec![response(
            "409 Conflict",
            "",
            r#"{"error":"device id taken"}"#,
        )]);
        let e = client(&base).enroll(&enroll_request()).unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, ErrorKind::GiveUp);
        assert_eq!(e.status, Some(409));
        assert_eq!(e.message, "device id taken");
        assert_eq!(e.path, "/api/devices/enroll");
        assert_eq!(
            e.to_string(),
            "/api/devices/enroll: HTTP 409: device id taken"
        );
    }

    #[test]
    fn unauthorized_means_reauthenticate() {
        let (base, server) = serve(vec![response(
            "401 Unauthorized",
            "",
            r#"{"error":"unknown or revoked token"}"#,
        )]);
        let e = client(&base).rollouts().unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, ErrorKind::Reauthenticate);
        assert_eq!(e.message, "unknown or revoked token");
    }

    #[test]
    fn unavailable_with_retry_after_means_retry_later() {
        let (base, server) = serve(vec![response(
            "503 Service Unavailable",
            "Retry-After: 17\r\n",
            r#"{"error":"overloaded"}"#,
        )]);
        let e = client(&base).devices().unwrap_err();
        server.join().unwrap();
        assert_eq!(e.kind, ErrorKind::Retry);
        assert_eq!(e.status, Some(503));
        assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
    }

    #[test]
    fn not_found_means_give_up_and_a_plain_body_is_kept() {
        let (base, server) = serve(vec![
            response("404 Not Found", "", r#"{"error":"no rollout 99"}"#),
            response("404 Not Found", "", "nothing here\n"),
            response("404 Not Found", "", ""),
        ]);
        let api = client(&base);
        let e = api.rollout(99).unwrap_err();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ErrorKind::GiveUp, "no rollout 99")
        );
        assert_eq!(e.path, "/api/rollouts/99");
        assert_eq!(api.device("x").unwrap_err().message, "nothing here");
        assert_eq!(api.device("x").unwrap_err().message, "Not Found");
        server.join().unwrap();
    }

    #[test]
    fn connection_refused_means_retry() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = client(&format!("http://127.0.0.1:{port}"))
            .rollouts()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Retry);
        assert_eq!(e.status, None);
        assert!(
            e.message
                .starts_with("cannot reach the server at http://127.0.0.1:"),
            "{e}"
        );
        assert!(e.message.contains("refused"), "{e}");
    }

    #[test]
    fn a_silent_server_times_out_and_means_retry() {
        // The kernel completes the connection; nobody ever answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let e = client(&base)
            .with_timeout(Duration::from_millis(200))
            .devices()
            .unwrap_err();
        assert_eq!((e.kind, e.status), (ErrorKind::Retry, None));
        assert!(
            e.message
                .starts_with(&format!("no answer from the server at {base} in time")),
            "{e}"
        );
        drop(listener);
    }

    #[test]
    fn absolute_urls_are_kept() {
        let api = client("https://ota.example.com/");
        assert_eq!(
            api.url("/api/devices"),
            "https://ota.example.com/api/devices"
        );
        assert_eq!(
            api.url("http://cdn.example.com/b.otab"),
            "http://cdn.example.com/b.otab"
        );
    }

    #[test]
    fn a_bad_base_url_is_said_in_our_words() {
        for base in ["ota.example.com", "/api", "ftp://ota.example.com", ""] {
            let e = ApiClient::new(&ClientOptions::new(base)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::GiveUp);
            assert!(
                e.to_string()
                    .contains("must start with http:// or https://"),
                "{e}"
            );
            assert!(e.to_string().contains(&format!("{base:?}")), "{e}");
        }
    }

    #[test]
    fn a_bad_ca_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-ca.pem");
        let mut options = ClientOptions::new("https://ota.example.com");
        options.ca_file = Some(missing.clone());
        let e = ApiClient::new(&options).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cannot read CA file {}", missing.display())),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");

        let good = dir.path().join("good-ca.pem");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["ota.example.com".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&good, cert.pem()).unwrap();
        options.ca_file = Some(good);
        ApiClient::new(&options).expect("a PEM certificate is a usable CA file");

        let garbage = dir.path().join("ca.pem");
        std::fs::write(&garbage, "this is not a certificate\n").unwrap();
        options.ca_file = Some(garbage.clone());
        let e = ApiClient::new(&options).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!(
                "CA file {} is not a PEM certificate",
                garbage.display()
            )),
            "{e}"
        );
    }

    #[test]
    fn publish_streams_the_file_after_checking_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("b.otab");
        std::fs::write(&bundle, b"bundle bytes").unwrap();
        let published = r#"{"bundle_id":"ab","version":"1.2.3","compatible":"acme","manifest_digest":"cd","size":12,"deduplicated":false}"#;
        let (base, server) = serve(vec![
            response("200 OK", "", "[]"),
            response("200 OK", "", published),
        ]);
        let answer = client(&base).publish_file(&bundle).unwrap();
        let seen = server.join().unwrap();
        assert_eq!((answer.size, answer.deduplicated), (12, false));
        assert!(seen[0].starts_with("GET /api/bundles "), "{}", seen[0]);
        assert!(seen[1].starts_with("POST /api/bundles "), "{}", seen[1]);
        assert!(
            seen[1].contains("content-type: application/octet-stream"),
            "{}",
            seen[1]
        );
        assert!(seen[1].ends_with("\r\n\r\nbundle bytes"), "{}", seen[1]);

        let e = client(&base)
            .publish_file(&dir.path().join("missing.otab"))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::GiveUp);
        assert!(
            e.to_string().contains("cannot open bundle") && e.to_string().contains("missing.otab"),
            "{e}"
        );
    }
}

/// A server presenting its CA certificate as its own gets an error that says what to do.
#[cfg(feature = "client")]
#[test]
fn a_ca_certificate_served_as_the_servers_gets_the_way_out() {
    let hint =
        super::http::tls_hint("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))");
    assert!(
        hint.contains("signed by that CA") && hint.contains("docs/tls.md"),
        "{hint}"
    );
    assert_eq!(
        super::http::tls_hint("Connection refused (os error 111)"),
        ""
    );
}
