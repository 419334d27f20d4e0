//! Garbage, truncated, oversized, silent and hung-up peers: a raw TCP
//! server on loopback answers the transport's first request.
#![cfg(feature = "ureq")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use upsvisor_core::{Credentials, Error, ErrorKind, HostTransport};
use upsvisor_soap::{SoapConfig, SoapTransport};

/// Reads one HTTP request (headers and a Content-Length body).
fn read_request(s: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&b[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return;
            }
        }
    }
}

/// Serves `reply` to up to 4 connections (ureq may retry an idempotent
/// failure once) and returns the transport's error.
fn error_from(
    reply: impl Fn(&mut TcpStream) + Send + 'static,
    tweak: impl FnOnce(SoapConfig) -> SoapConfig,
) -> Error {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { return };
            read_request(&mut s);
            reply(&mut s);
        }
    });
    let cfg = SoapConfig::new(
        format!("http://{addr}/sdk"),
        Credentials::new("user", "pass"),
    )
    .dangerous_allow_plain_http(true)
    .timeout(Duration::from_secs(5));
    let t = SoapTransport::new(tweak(cfg)).unwrap();
    let err = block_on(t.inventory()).unwrap_err();
    eprintln!("{:?}: {err}", err.kind());
    err
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

const START: &str = r#"<?xml version="1.0"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body><RetrieveServiceContentResponse xmlns="urn:vim25"><returnval><rootFolder type="Folder">ha-folder-root</rootFolder>"#;

#[test]
fn garbage_instead_of_http() {
    let err = error_from(
        |s| drop(s.write_all(b"\x00\xffSSH-2.0-OpenSSH\r\n\x13garbage")),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

#[test]
fn html_instead_of_soap() {
    let err = error_from(
        |s| drop(s.write_all(&http("200 OK", b"<html><body>It works!</body></html>"))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("SOAP Envelope"), "{err}");
    let err = error_from(
        |s| drop(s.write_all(&http("404 Not Found", b"nope"))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("HTTP 404"), "{err}");
}

#[test]
fn truncated_body() {
    // Content-Length promises more than comes before the close.
    let err = error_from(
        |s| {
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{START}").as_bytes(),
            );
        },
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("cut short"), "{err}");
    // Complete HTTP, XML cut in the middle.
    let err = error_from(
        |s| drop(s.write_all(&http("200 OK", START.as_bytes()))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        err.to_string().contains("truncated") || err.to_string().contains("malformed"),
        "{err}"
    );
}

#[test]
fn oversized_and_too_deep_replies() {
    let err = error_from(
        |s| {
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 50000000\r\n\r\n");
            let chunk = vec![b'<'; 64 * 1024];
            for _ in 0..800 {
                if s.write_all(&chunk).is_err() {
                    return;
                }
            }
        },
        |c| c.max_reply_bytes(1 << 20),
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
    let deep = format!("{START}{}", "<a>".repeat(10_000));
    let err = error_from(
        move |s| drop(s.write_all(&http("200 OK", deep.as_bytes()))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("deeper"), "{err}");
}

#[test]
fn hang_up_silence_and_refusal() {
    let err = error_from(|s| drop(s.shutdown(std::net::Shutdown::Both)), |c| c);
    assert!(
        matches!(err.kind(), ErrorKind::Unreachable | ErrorKind::Protocol),
        "{err}"
    );
    let t0 = Instant::now();
    let err = error_from(
        |_s| std::thread::sleep(Duration::from_secs(3)),
        |c| c.timeout(Duration::from_millis(300)),
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    // Nothing listening.
    let port = upsvisor_testkit::free_port();
    let cfg = SoapConfig::new(
        format!("http://127.0.0.1:{port}"),
        Credentials::new("u", "p"),
    )
    .dangerous_allow_plain_http(true);
    let err = block_on(SoapTransport::new(cfg).unwrap().inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}
