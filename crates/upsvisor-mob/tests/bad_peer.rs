//! Garbage, truncated, oversized, slow and hung-up MOB peers: a raw TCP
//! server on loopback answers the transport's first request.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use upsvisor_core::{Credentials, Error, ErrorKind, HostTransport};
use upsvisor_mob::{MobConfig, MobTransport};

/// Reads one HTTP request (headers and a Content-Length body); returns its
/// request line.
fn read_request(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut b = [0u8; 4096];
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    while let Ok(n) = s.read(&mut b) {
        if n == 0 {
            return String::new();
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
                return String::from_utf8_lossy(&buf[..end])
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
        }
    }
    String::new()
}

/// A plain-HTTP loopback peer answering up to `n` connections with
/// `reply(stream, request line)`; a config pointing at it.
fn peer(n: usize, reply: impl Fn(&mut TcpStream, &str) + Send + 'static) -> MobConfig {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(n) {
            let Ok(mut s) = s else { return };
            let line = read_request(&mut s);
            reply(&mut s, &line);
        }
    });
    MobConfig::new(format!("http://{addr}"), Credentials::new("user", "pass"))
        .dangerous_allow_plain_http(true)
        .timeout(Duration::from_secs(5))
}

/// Serves `reply` to up to 4 connections (ureq may retry an idempotent
/// failure once) and returns the transport's error.
fn error_from(
    reply: impl Fn(&mut TcpStream) + Send + 'static,
    tweak: impl FnOnce(MobConfig) -> MobConfig,
) -> Error {
    let cfg = peer(4, move |s, _| reply(s));
    let t = common::mob_new(tweak(cfg)).unwrap();
    let err = block_on(t.inventory()).unwrap_err();
    eprintln!("{:?}: {err}", err.kind());
    err
}

fn http(status: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

const PAGE: &str = r#"<html><body><p class="table-title">Properties</p><table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr><tr><td>content</td><td>ServiceContent</td><td>"#;

both_backends!(
    garbage_instead_of_http,
    garbage_instead_of_http_reqwest,
    garbage_instead_of_http_body
);

fn garbage_instead_of_http_body() {
    let err = error_from(
        |s| drop(s.write_all(b"\x00\xffSSH-2.0-OpenSSH\r\n\x13garbage")),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

both_backends!(
    pages_in_an_unexpected_shape,
    pages_in_an_unexpected_shape_reqwest,
    pages_in_an_unexpected_shape_body
);

fn pages_in_an_unexpected_shape_body() {
    let err = error_from(
        |s| drop(s.write_all(&http("200 OK", b"<html><body>It works!</body></html>"))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("no Properties table"), "{err}");
    // A properties table without the fields asked for.
    let err = error_from(
        |s| {
            drop(s.write_all(&http(
                "200 OK",
                b"<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr><tr><td>x</td><td>int</td><td>1</td></tr></table>",
            )))
        },
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        err.to_string().contains("no product name or version"),
        "{err}"
    );
    let err = error_from(
        |s| drop(s.write_all(&http("500 Internal Server Error", b"boom"))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("HTTP 500"), "{err}");
    // Not UTF-8.
    let err = error_from(
        |s| drop(s.write_all(&http("200 OK", b"\xff\xfe<table>"))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

both_backends!(
    mob_disabled_and_login_refused,
    mob_disabled_and_login_refused_reqwest,
    mob_disabled_and_login_refused_body
);

fn mob_disabled_and_login_refused_body() {
    for status in ["503 Service Unavailable", "404 Not Found"] {
        let err = error_from(move |s| drop(s.write_all(&http(status, b"nope"))), |c| c);
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(err.to_string().contains("enableMob"), "{err}");
        assert!(err.to_string().contains("SOAP"), "{err}");
    }
    let err = error_from(|s| drop(s.write_all(&http("401 Unauthorized", b""))), |c| c);
    assert_eq!(err.kind(), ErrorKind::Auth, "{err}");
    assert!(!err.to_string().contains("pass"), "{err}");
}

both_backends!(truncated_body, truncated_body_reqwest, truncated_body_body);

fn truncated_body_body() {
    let err = error_from(
        |s| {
            let _ = s.write_all(
                format!("HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n{PAGE}").as_bytes(),
            );
        },
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("cut short"), "{err}");
    // Complete HTTP, page cut in the middle: no version found.
    let err = error_from(
        |s| drop(s.write_all(&http("200 OK", PAGE.as_bytes()))),
        |c| c,
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
}

both_backends!(huge_body, huge_body_reqwest, huge_body_body);

fn huge_body_body() {
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
        |c| c.max_page_bytes(1 << 20),
    );
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("larger than"), "{err}");
}

both_backends!(
    slow_silent_hung_up_and_refused,
    slow_silent_hung_up_and_refused_reqwest,
    slow_silent_hung_up_and_refused_body
);

fn slow_silent_hung_up_and_refused_body() {
    let err = error_from(|s| drop(s.shutdown(std::net::Shutdown::Both)), |c| c);
    assert!(
        matches!(err.kind(), ErrorKind::Unreachable | ErrorKind::Protocol),
        "{err}"
    );
    // A peer that answers, slowly, byte by byte past the timeout.
    let t0 = Instant::now();
    let err = error_from(
        |s| {
            let reply = http("200 OK", PAGE.as_bytes());
            for b in reply {
                if s.write_all(&[b]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        },
        |c| c.timeout(Duration::from_millis(500)),
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    // Silent.
    let err = error_from(
        |_s| std::thread::sleep(Duration::from_secs(3)),
        |c| c.timeout(Duration::from_millis(300)),
    );
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // Nothing listening.
    let port = upsvisor_testkit::free_port();
    let cfg = MobConfig::new(
        format!("http://127.0.0.1:{port}"),
        Credentials::new("u", "p"),
    )
    .dangerous_allow_plain_http(true);
    let err = block_on(common::mob_new(cfg).unwrap().inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unreachable, "{err}");
}

#[test]
fn plain_http_needs_the_dangerous_option() {
    let err = MobTransport::new(MobConfig::new(
        "http://127.0.0.1:1",
        Credentials::new("u", "p"),
    ))
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
}

#[cfg(feature = "reqwest")]
#[test]
fn reqwest_outside_a_tokio_runtime_says_so() {
    let cfg = MobConfig::new("https://127.0.0.1:1", Credentials::new("u", "p"));
    let t = MobTransport::new_reqwest(cfg).unwrap();
    let err = block_on(t.host_info()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Config, "{err}");
    assert!(err.to_string().contains("tokio"), "{err}");
}

/// A MOB whose root and folder pages are right and whose VM summaries lack
/// what a VM needs: each request answered by its path.
fn routed(route: impl Fn(&str) -> Vec<u8> + Send + 'static) -> MobTransport {
    let cfg = peer(64, move |s, line| {
        let path = line.split(' ').nth(1).unwrap_or_default();
        let _ = s.write_all(&route(path));
    });
    common::mob_new(cfg).unwrap()
}

const HEAD: &str = "<table><tr><th>NAME</th><th>TYPE</th><th>VALUE</th></tr>";

fn mob_page(rows: &str) -> Vec<u8> {
    http(
        "200 OK",
        format!("<html><body>{HEAD}{rows}</table></body></html>").as_bytes(),
    )
}

fn root_or_folder(path: &str) -> Option<Vec<u8>> {
    if path == "/mob" {
        return Some(mob_page(&format!(
            r#"<tr><td>content</td><td>ServiceContent</td><td>{HEAD}<tr><td>about</td><td>AboutInfo</td><td>{HEAD}<tr><td>name</td><td>string</td><td>"VMware ESXi"</td></tr><tr><td>version</td><td>string</td><td>"8.0.2"</td></tr></table></td></tr></table></td></tr>"#
        )));
    }
    if path.contains("moid=ha-folder-vm") {
        return Some(mob_page(
            r#"<tr><td>childEntity</td><td>ManagedObjectReference[]</td><td><ul><li><a href="/mob/?moid=1">1</a></li></ul></td></tr>"#,
        ));
    }
    None
}

both_backends!(
    summaries_with_missing_fields,
    summaries_with_missing_fields_reqwest,
    summaries_with_missing_fields_body
);

fn summaries_with_missing_fields_body() {
    // Neither config nor runtime: refused, saying so.
    let t = routed(|p| {
        root_or_folder(p)
            .unwrap_or_else(|| mob_page(r#"<tr><td>guest</td><td>X</td><td>Unset</td></tr>"#))
    });
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(
        err.to_string().contains("neither config nor runtime"),
        "{err}"
    );
    // Only a name: the VM is reported with what is known, the rest unknown.
    let t = routed(|p| {
        root_or_folder(p).unwrap_or_else(|| {
            mob_page(&format!(
                r#"<tr><td>config</td><td>VirtualMachineConfigSummary</td><td>{HEAD}<tr><td>name</td><td>string</td><td>"lonely"</td></tr><tr><td>numCpu</td><td>int</td><td>many</td></tr></table></td></tr>"#
            ))
        })
    });
    let inv = block_on(t.inventory()).expect("inventory");
    assert_eq!(inv.info.version.as_deref(), Some("8.0.2"));
    let vm = &inv.vms[0];
    assert_eq!(vm.name, "lonely");
    assert_eq!(vm.id.as_str(), "1");
    assert_eq!(vm.power, upsvisor_core::PowerState::Unknown);
    assert_eq!(vm.vcpus, None);
    assert!(vm.ips.is_empty());
    // A folder page without its childEntity row.
    let t = routed(|p| {
        if p.contains("ha-folder-vm") {
            mob_page(r#"<tr><td>name</td><td>string</td><td>"vm"</td></tr>"#)
        } else {
            root_or_folder(p).unwrap_or_default()
        }
    });
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("no childEntity"), "{err}");
}

both_backends!(
    per_vm_pages_never_lose_vms_silently,
    per_vm_pages_never_lose_vms_silently_reqwest,
    per_vm_pages_never_lose_vms_silently_body
);

/// Issue 20: a VM whose summary page fails is never left out of a
/// successful inventory, unless the MOB says ManagedObjectNotFound *and*
/// a fresh folder page no longer lists it.
fn per_vm_pages_never_lose_vms_silently_body() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let fault = || {
        http(
            "500 Internal Server Error",
            br#"<html><body><p class="fault">ManagedObjectNotFound</p></body></html>"#,
        )
    };
    // The summary page is a server error without a fault: the inventory
    // fails, it does not come back with no VMs.
    let t = routed(|p| {
        root_or_folder(p).unwrap_or_else(|| http("500 Internal Server Error", b"hostd is busy"))
    });
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    // ManagedObjectNotFound while the folder still lists the VM: refused.
    let t = routed(move |p| root_or_folder(p).unwrap_or_else(fault));
    let err = block_on(t.inventory()).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    assert!(err.to_string().contains("still listed"), "{err}");
    // ManagedObjectNotFound and the fresh folder page no longer lists it:
    // really gone, left out.
    let folders = Arc::new(AtomicUsize::new(0));
    let t = routed(move |p| {
        if p.contains("moid=ha-folder-vm") && folders.fetch_add(1, Ordering::SeqCst) > 0 {
            return mob_page(
                r#"<tr><td>childEntity</td><td>ManagedObjectReference[]</td><td><ul></ul></td></tr>"#,
            );
        }
        root_or_folder(p).unwrap_or_else(fault)
    });
    let inv = block_on(t.inventory()).expect("inventory");
    assert!(inv.vms.is_empty(), "{:?}", inv.vms);
}
