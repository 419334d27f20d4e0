//! Against a fake upsd the test runs on 127.0.0.1: exact request lines,
//! every `ERR` mapping, and bad servers (garbage, truncated, oversized,
//! silent).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::executor::block_on;
use upsvisor_core::{Credentials, DeviceCommand, ErrorKind, PowerDevice, PowerSource};
use upsvisor_nut::{NutClient, NutConfig, NutDevice};

/// What the fake server does with one request line.
enum Answer {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send these bytes, then close.
    SendClose(Vec<u8>),
    /// Say nothing (and keep the connection open).
    Silence,
}

fn send(s: &str) -> Answer {
    Answer::Send(s.as_bytes().to_vec())
}

struct Fake {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    conns: Arc<AtomicUsize>,
}

impl Fake {
    /// `handler(connection number, line)`.
    fn start(handler: impl Fn(usize, &str) -> Answer + Send + Sync + 'static) -> Fake {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(handler);
        let (lines2, conns2) = (lines.clone(), conns.clone());
        std::thread::spawn(move || {
            for stream in l.incoming() {
                let Ok(stream) = stream else { return };
                let n = conns2.fetch_add(1, Ordering::SeqCst) + 1;
                let (lines, handler) = (lines2.clone(), handler.clone());
                std::thread::spawn(move || serve(stream, n, &lines, &*handler));
            }
        });
        Fake { port, lines, conns }
    }

    fn cfg(&self) -> NutConfig {
        NutConfig::new("ups1")
            .port(self.port)
            .call_timeout(Duration::from_millis(800))
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn conns(&self) -> usize {
        self.conns.load(Ordering::SeqCst)
    }
}

fn serve(
    stream: TcpStream,
    n: usize,
    lines: &Mutex<Vec<String>>,
    handler: &(dyn Fn(usize, &str) -> Answer + Send + Sync),
) {
    let mut w = stream.try_clone().unwrap();
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        lines.lock().unwrap().push(line.clone());
        match handler(n, &line) {
            Answer::Send(b) => {
                if w.write_all(&b).is_err() {
                    return;
                }
            }
            Answer::SendClose(b) => {
                let _ = w.write_all(&b);
                return;
            }
            Answer::Silence => {}
        }
    }
}

/// A well-behaved upsd for `ups1`, status `OL`, that says OK to commands.
fn good(line: &str) -> Answer {
    match line {
        "LIST VAR ups1" => send(
            "BEGIN LIST VAR ups1\nVAR ups1 ups.status \"OL CHRG\"\nVAR ups1 battery.charge \"88\"\nEND LIST VAR ups1\n",
        ),
        "LIST CMD ups1" => send(
            "BEGIN LIST CMD ups1\nCMD ups1 shutdown.return\nCMD ups1 outlet.1.load.off\nEND LIST CMD ups1\n",
        ),
        "LIST RW ups1" => send("BEGIN LIST RW ups1\nEND LIST RW ups1\n"),
        l if l.starts_with("LIST VAR") => send("ERR UNKNOWN-UPS\n"),
        "PRIMARY ups1" => send("OK PRIMARY-GRANTED\n"),
        "FSD ups1" => send("OK FSD-SET\n"),
        "LOGOUT" => Answer::SendClose(b"OK Goodbye\n".to_vec()),
        _ => send("OK\n"),
    }
}

fn admin(cfg: NutConfig) -> NutConfig {
    cfg.credentials(Credentials::new("mon", "pa\"ss\\word"))
}

#[test]
fn command_mapping_sends_exact_lines() {
    let fake = Fake::start(|_, l| good(l));
    let dev = NutDevice::new(admin(fake.cfg())).unwrap();
    let cmds = [
        DeviceCommand::ShutdownReturn {
            delay: Duration::from_secs(30),
        },
        DeviceCommand::ShutdownStayOff {
            delay: Duration::from_millis(1500),
        },
        DeviceCommand::OutletOff {
            outlet: "1".into(),
            delay: Duration::ZERO,
        },
        DeviceCommand::OutletOn {
            outlet: "group.2".into(),
        },
        DeviceCommand::OutletOff {
            outlet: "main".into(),
            delay: Duration::from_secs(20),
        },
        DeviceCommand::CancelShutdown,
        DeviceCommand::SetFsd,
        DeviceCommand::SetFsd,
    ];
    for c in cmds {
        block_on(dev.command(c)).unwrap();
    }
    assert_eq!(
        fake.lines(),
        [
            r#"USERNAME "mon""#,
            r#"PASSWORD "pa\"ss\\word""#,
            r#"SET VAR ups1 ups.delay.shutdown "30""#,
            "INSTCMD ups1 shutdown.return",
            r#"SET VAR ups1 ups.delay.shutdown "2""#,
            "INSTCMD ups1 shutdown.stayoff",
            "INSTCMD ups1 outlet.1.load.off",
            "INSTCMD ups1 outlet.group.2.load.on",
            r#"SET VAR ups1 ups.delay.shutdown "20""#,
            "INSTCMD ups1 load.off.delay",
            "INSTCMD ups1 shutdown.stop",
            "PRIMARY ups1",
            "FSD ups1",
            "FSD ups1",
        ]
    );
    assert_eq!(fake.conns(), 1, "one session for all commands");

    // Delayed off of a single outlet has no NUT command: refused, nothing sent.
    let before = fake.lines().len();
    let e = block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "1".into(),
        delay: Duration::from_secs(5),
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported);
    // An outlet id that would inject words is refused before sending.
    let e = block_on(dev.command(DeviceCommand::OutletOn {
        outlet: "1 ; FSD".into(),
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert_eq!(fake.lines().len(), before);

    let caps = block_on(dev.capabilities()).unwrap();
    assert!(caps.shutdown_return && !caps.shutdown_stayoff && caps.set_fsd);
    assert_eq!(
        caps.switchable_outlets,
        Vec::<upsvisor_core::OutletId>::new()
    );
}

#[test]
fn login_and_primary_falls_back_to_master() {
    let fake = Fake::start(|_, l| match l {
        "PRIMARY ups1" => send("ERR UNKNOWN-COMMAND\n"),
        "MASTER ups1" => send("OK MASTER-GRANTED\n"),
        l => good(l),
    });
    let dev = NutDevice::new(admin(fake.cfg()).login(true)).unwrap();
    block_on(dev.command(DeviceCommand::SetFsd)).unwrap();
    // The LOGIN has a connection of its own; the commands use another.
    assert_eq!(
        fake.lines()[2..],
        [
            "LOGIN ups1",
            r#"USERNAME "mon""#,
            r#"PASSWORD "pa\"ss\\word""#,
            "PRIMARY ups1",
            "MASTER ups1",
            "FSD ups1"
        ]
    );
    assert_eq!(fake.conns(), 2);
}

#[test]
fn a_login_connection_upsd_closed_is_made_again() {
    // upsd restarts: the idle login connection is closed under us. The
    // next call notices without sending anything on it, and logs in again.
    let fake = Fake::start(|n, l| match l {
        "LOGIN ups1" if n == 1 => Answer::SendClose(b"OK\n".to_vec()),
        l => good(l),
    });
    let dev = NutDevice::new(admin(fake.cfg()).login(true)).unwrap();
    block_on(dev.status()).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    block_on(dev.status()).unwrap();
    let logins = fake.lines().iter().filter(|l| *l == "LOGIN ups1").count();
    assert_eq!(logins, 2, "{:?}", fake.lines());
}

#[test]
fn a_failed_query_does_not_end_the_login() {
    // Connection 1 holds the LOGIN; the first data connection (2) gets a
    // garbled list and is dropped; the next call opens a third. A primary
    // upsmon must never see upsvisor leave in between: one LOGIN, still
    // open.
    let fake = Fake::start(|n, l| match l {
        "LIST VAR ups1" if n == 2 => send("BEGIN LIST VAR ups1\nGARBAGE\n"),
        l => good(l),
    });
    let dev = NutDevice::new(admin(fake.cfg()).login(true)).unwrap();
    let e = block_on(dev.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Protocol, "{e}");
    assert_eq!(block_on(dev.status()).unwrap().source, PowerSource::OnLine);
    assert_eq!(fake.conns(), 3);
    let logins = fake.lines().iter().filter(|l| *l == "LOGIN ups1").count();
    assert_eq!(logins, 1);
    assert!(!fake.lines().iter().any(|l| l == "LOGOUT"));
}

#[test]
fn outlets_switch_by_set_var_where_no_instant_command_exists() {
    // An older driver (tripplite_usb, MGE mge-shut): no outlet instant
    // commands, a writable outlet.1.switch; outlet 2 has neither.
    let fake = Fake::start(|_, l| match l {
        l if l.starts_with("INSTCMD ups1 outlet.") => send("ERR CMD-NOT-SUPPORTED\n"),
        r#"SET VAR ups1 outlet.2.switch "0""# => send("ERR VAR-NOT-SUPPORTED\n"),
        "LIST VAR ups1" => send(
            "BEGIN LIST VAR ups1\nVAR ups1 ups.status \"OL\"\nVAR ups1 outlet.1.switch \"1\"\nVAR ups1 outlet.2.desc \"Load 2\"\nVAR ups1 outlet.2.switchable \"0\"\nEND LIST VAR ups1\n",
        ),
        "LIST CMD ups1" => send("BEGIN LIST CMD ups1\nCMD ups1 load.off\nEND LIST CMD ups1\n"),
        "LIST RW ups1" => {
            send("BEGIN LIST RW ups1\nRW ups1 outlet.1.switch \"1\"\nEND LIST RW ups1\n")
        }
        l => good(l),
    });
    let dev = NutDevice::new(admin(fake.cfg())).unwrap();
    let s = block_on(dev.status()).unwrap();
    assert_eq!(s.outlets[0].on, Some(true), "outlet.1.switch 1 reads as on");
    block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "1".into(),
        delay: Duration::ZERO,
    }))
    .unwrap();
    block_on(dev.command(DeviceCommand::OutletOn { outlet: "1".into() })).unwrap();
    let e = block_on(dev.command(DeviceCommand::OutletOff {
        outlet: "2".into(),
        delay: Duration::ZERO,
    }))
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");
    let m = e.to_string();
    assert!(m.contains("cannot be switched"), "{m}");
    assert!(
        m.contains("outlet.2.load.off") && m.contains("outlet.2.switch"),
        "{m}"
    );
    let l = fake.lines();
    assert_eq!(
        l[3..],
        [
            "INSTCMD ups1 outlet.1.load.off",
            r#"SET VAR ups1 outlet.1.switch "0""#,
            "INSTCMD ups1 outlet.1.load.on",
            r#"SET VAR ups1 outlet.1.switch "1""#,
            "INSTCMD ups1 outlet.2.load.off",
            r#"SET VAR ups1 outlet.2.switch "0""#,
        ]
    );
    let caps = block_on(dev.capabilities()).unwrap();
    assert_eq!(
        caps.switchable_outlets,
        vec![upsvisor_core::OutletId::from("1")]
    );
}

#[test]
fn logout_detaches_until_login() {
    let fake = Fake::start(|_, l| good(l));
    let dev = NutDevice::new(admin(fake.cfg()).login(true)).unwrap();
    block_on(dev.status()).unwrap();
    block_on(dev.logout()).unwrap();
    block_on(dev.status()).unwrap();
    block_on(dev.login()).unwrap();
    block_on(dev.login()).unwrap();
    let u = r#"USERNAME "mon""#;
    let p = r#"PASSWORD "pa\"ss\\word""#;
    assert_eq!(
        fake.lines(),
        [
            u,
            p,
            "LOGIN ups1", // the login connection
            u,
            p,
            "LIST VAR ups1", // the data connection
            "LOGOUT",        // on the login connection, which ends
            "LIST VAR ups1", // still the data connection, no LOGIN
            u,
            p,
            "LOGIN ups1", // login(): a new login connection
        ],
        "no LOGIN after LOGOUT until login(); a second login() sends nothing"
    );
    // Through the trait: detach is LOGOUT, attach is LOGIN again.
    let n = fake.lines().len();
    block_on(PowerDevice::detach(&dev)).unwrap();
    block_on(PowerDevice::attach(&dev)).unwrap();
    assert_eq!(
        fake.lines()[n..],
        [
            "LOGOUT",
            r#"USERNAME "mon""#,
            r#"PASSWORD "pa\"ss\\word""#,
            "LOGIN ups1"
        ]
    );
    // A device configured without LOGIN stays so on attach.
    let plain = NutDevice::new(admin(fake.cfg())).unwrap();
    let n = fake.lines().len();
    block_on(PowerDevice::attach(&plain)).unwrap();
    assert_eq!(fake.lines().len(), n);
    // Without credentials there is no LOGIN.
    let anon = NutDevice::new(fake.cfg()).unwrap();
    let e = block_on(anon.login()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
}

#[test]
fn err_words_map_to_kinds() {
    let cases = [
        ("ACCESS-DENIED", ErrorKind::Auth),
        ("PASSWORD-REQUIRED", ErrorKind::Auth),
        ("USERNAME-REQUIRED", ErrorKind::Auth),
        ("UNKNOWN-UPS", ErrorKind::NotFound),
        ("CMD-NOT-SUPPORTED", ErrorKind::Unsupported),
        ("FEATURE-NOT-CONFIGURED", ErrorKind::Unsupported),
        ("INSTCMD-FAILED", ErrorKind::InvalidState),
        ("DRIVER-NOT-CONNECTED", ErrorKind::Unreachable),
        ("DATA-STALE", ErrorKind::Unreachable),
        ("INVALID-ARGUMENT", ErrorKind::Protocol),
        ("SOMETHING-NEW", ErrorKind::Protocol),
    ];
    for (word, kind) in cases {
        let reply = format!("ERR {word} extra words\n");
        let fake = Fake::start(move |_, l| {
            if l.starts_with("INSTCMD") {
                send(&reply)
            } else {
                good(l)
            }
        });
        let dev = NutDevice::new(admin(fake.cfg())).unwrap();
        let e = block_on(dev.command(DeviceCommand::CancelShutdown)).unwrap_err();
        assert_eq!(e.kind(), kind, "{word}: {e}");
        assert!(e.to_string().contains(word), "{e}");
        assert!(!e.to_string().contains("pa\"ss"), "{e}");
        // A clean ERR leaves the session usable, on the same connection.
        assert_eq!(block_on(dev.status()).unwrap().source, PowerSource::OnLine);
        assert_eq!(fake.conns(), 1);
    }
}

#[test]
fn data_stale_is_a_stale_status() {
    let fake = Fake::start(|_, l| match l {
        "LIST VAR ups1" => send("ERR DATA-STALE\n"),
        l => good(l),
    });
    let dev = NutDevice::new(fake.cfg()).unwrap();
    let s = block_on(dev.status()).unwrap();
    assert!(s.stale);
    assert_eq!(s.source, PowerSource::Unknown);
    assert!(s.tokens.is_empty() && s.charge_pct.is_none());
    assert!(dev.last_seen().is_none());
}

type BadAnswer = Box<dyn Fn() -> Answer + Send + Sync>;

/// Each bad answer to `LIST VAR` gives a Protocol error (or Timeout for
/// silence), fast, without a panic; the next call, on a new connection,
/// works.
#[test]
fn bad_servers_give_clear_errors_and_never_wedge() {
    let cases: Vec<(&str, BadAnswer, ErrorKind)> = vec![
        (
            "garbage",
            Box::new(|| send("HELLO I AM NOT UPSD\n")),
            ErrorKind::Protocol,
        ),
        (
            "binary",
            Box::new(|| Answer::Send(vec![0xff, 0x00, b'"', 0x9c, b'\n'])),
            ErrorKind::Protocol,
        ),
        (
            "wrong list",
            Box::new(|| send("BEGIN LIST CMD ups1\nEND LIST CMD ups1\n")),
            ErrorKind::Protocol,
        ),
        (
            "other ups in list",
            Box::new(|| {
                send("BEGIN LIST VAR ups1\nVAR ups2 ups.status \"OL\"\nEND LIST VAR ups1\n")
            }),
            ErrorKind::Protocol,
        ),
        (
            "truncated list",
            Box::new(|| {
                Answer::SendClose(b"BEGIN LIST VAR ups1\nVAR ups1 ups.status \"OL\"\n".to_vec())
            }),
            ErrorKind::Protocol,
        ),
        (
            "truncated line",
            Box::new(|| Answer::SendClose(b"BEGIN LIST VAR ups1\nVAR ups1 ups.sta".to_vec())),
            ErrorKind::Protocol,
        ),
        (
            "unterminated quote",
            Box::new(|| send("BEGIN LIST VAR ups1\nVAR ups1 ups.status \"OL\nEND LIST VAR ups1\n")),
            ErrorKind::Protocol,
        ),
        (
            "oversized line",
            Box::new(|| Answer::Send(vec![b'A'; 100_000])),
            ErrorKind::Protocol,
        ),
        (
            "oversized list",
            Box::new(|| {
                let mut s = String::from("BEGIN LIST VAR ups1\n");
                for i in 0..200 {
                    s += &format!("VAR ups1 v{i} \"1\"\n");
                }
                send(&s)
            }),
            ErrorKind::Protocol,
        ),
        ("silence", Box::new(|| Answer::Silence), ErrorKind::Timeout),
        (
            "silence mid-list",
            Box::new(|| send("BEGIN LIST VAR ups1\n")),
            ErrorKind::Timeout,
        ),
        (
            "closed",
            Box::new(|| Answer::SendClose(Vec::new())),
            ErrorKind::Unreachable,
        ),
    ];
    for (name, bad, kind) in cases {
        // First connection misbehaves; later ones are good.
        let fake = Fake::start(move |conn, l| {
            if conn == 1 && l == "LIST VAR ups1" {
                bad()
            } else {
                good(l)
            }
        });
        let dev = NutDevice::new(fake.cfg().max_list_items(100)).unwrap();
        let t0 = Instant::now();
        let e = block_on(dev.status()).unwrap_err();
        assert_eq!(e.kind(), kind, "{name}: {e}");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{name}: took {:?}",
            t0.elapsed()
        );
        let s = block_on(dev.status()).unwrap_or_else(|e| panic!("{name}: not recovered: {e}"));
        assert_eq!(s.charge_pct, Some(88.0), "{name}");
        assert_eq!(fake.conns(), 2, "{name}: reconnected once");
    }
}

#[test]
fn silent_server_times_out_on_connect_handshake() {
    // Accepts, never answers USERNAME.
    let fake = Fake::start(|_, _| Answer::Silence);
    let mut c = NutClient::new(admin(fake.cfg())).unwrap();
    let t0 = Instant::now();
    let e = c.list_vars().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Timeout, "{e}");
    assert!(e.is_transient());
    let el = t0.elapsed();
    assert!(
        el >= Duration::from_millis(700) && el < Duration::from_secs(2),
        "{el:?}"
    );
}

#[test]
fn nothing_listening_is_unreachable() {
    let port = upsvisor_testkit::free_port();
    let dev = NutDevice::new(NutConfig::new("ups1").port(port)).unwrap();
    let e = block_on(dev.status()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unreachable, "{e}");
}

#[test]
fn invalid_config_is_refused() {
    for cfg in [
        NutConfig::new(""),
        NutConfig::new("ups 1"),
        NutConfig::new("ups1").host(""),
        NutConfig::new("ups1").login(true),
        NutConfig::new("ups1").call_timeout(Duration::ZERO),
    ] {
        let e = NutDevice::new(cfg).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
    }
}

#[test]
fn concurrent_calls_share_one_session() {
    let fake = Fake::start(|_, l| good(l));
    let dev = NutDevice::new(fake.cfg()).unwrap();
    let futs: Vec<_> = (0..8).map(|_| dev.status()).collect();
    let all = block_on(futures::future::join_all(futs));
    assert!(
        all.iter()
            .all(|r| r.as_ref().is_ok_and(|s| s.charge_pct == Some(88.0)))
    );
    assert_eq!(fake.conns(), 1);
}
