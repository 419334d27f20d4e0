//! A TCP relay on loopback that can lose its state the way a NAT or
//! firewall does: [`Relay::blip`] makes every connection through it
//! swallow traffic (read and dropped, no FIN, no RST), including new ones;
//! [`Relay::recover`] lets new connections through again while the old
//! ones stay dead (their state is lost for good).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The relay; its threads live as long as the test process.
pub struct Relay {
    /// The port to connect to instead of the upstream's.
    pub port: u16,
    epoch: Arc<AtomicU64>,
    swallow: Arc<AtomicBool>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, alive: impl Fn() -> bool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                if alive() {
                    let _ = to.shutdown(Shutdown::Write);
                }
                return;
            }
            Ok(n) => {
                if alive() && to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

impl Relay {
    /// Relays `127.0.0.1:<port>` to `upstream`.
    pub fn start(upstream: SocketAddr) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let epoch = Arc::new(AtomicU64::new(0));
        let swallow = Arc::new(AtomicBool::new(false));
        let (e, s) = (epoch.clone(), swallow.clone());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(client) = c else { return };
                if s.load(Ordering::SeqCst) {
                    // Accepted into the black hole: read, never answer.
                    std::thread::spawn(move || {
                        let mut c = client;
                        let mut buf = [0u8; 4096];
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                    });
                    continue;
                }
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let mine = e.load(Ordering::SeqCst);
                let alive = {
                    let (e, s) = (e.clone(), s.clone());
                    move || e.load(Ordering::SeqCst) == mine && !s.load(Ordering::SeqCst)
                };
                let alive2 = alive.clone();
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, alive));
                std::thread::spawn(move || pump(s2, c2, alive2));
            }
        });
        Relay {
            port,
            epoch,
            swallow,
        }
    }

    /// From now on every byte through the relay is dropped.
    pub fn blip(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        self.swallow.store(true, Ordering::SeqCst);
    }

    /// New connections pass again; those from before stay dead.
    pub fn recover(&self) {
        self.swallow.store(false, Ordering::SeqCst);
    }
}
