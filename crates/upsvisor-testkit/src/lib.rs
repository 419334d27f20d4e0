//! Helpers shared by upsvisor's integration tests: finding real peers,
//! temporary directories, free loopback ports and waiting for a port.
//!
//! The rule these helpers enforce: a test whose real peer (upsd, snmpd,
//! sshd, libvirtd, the vSphere simulator, socat) is missing **fails** when
//! `CI=true` and is skipped, loudly, elsewhere.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod bmc;
pub mod corpus;
pub mod libvirtd;
pub mod megatec;
pub mod nut;
pub mod relay;

use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether this run is CI (`CI=true`), where missing peers are failures.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Finds a peer program: the first of `candidates` (absolute paths or names
/// looked up in `PATH`) that exists. Missing under CI: panics with the
/// package to install. Missing elsewhere: prints why and returns `None`, and
/// the test should return early.
pub fn require_peer(candidates: &[&str], debian_package: &str) -> Option<PathBuf> {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() {
            if p.exists() {
                return Some(p.to_path_buf());
            }
        } else if let Some(found) = which(c) {
            return Some(found);
        }
    }
    let msg = format!(
        "peer {candidates:?} not found: install Debian package `{debian_package}` (the README's test command does)"
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not CI): {msg}");
    None
}

/// The Python virtualenv `scripts/install-deps` creates for PyPI peers
/// (snmpsim): `$UPSVISOR_VENV`, or `/opt/upsvisor-venv`.
pub fn venv_dir() -> PathBuf {
    std::env::var_os("UPSVISOR_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/upsvisor-venv"))
}

/// Finds `tool` in [`venv_dir`]'s `bin/`. Missing under CI: panics naming
/// the PyPI package and the script that installs it. Missing elsewhere:
/// prints why and returns `None`.
pub fn require_venv_tool(tool: &str, pypi_package: &str) -> Option<PathBuf> {
    let p = venv_dir().join("bin").join(tool);
    if p.is_file() {
        return Some(p);
    }
    let msg = format!(
        "peer {} not found: run scripts/install-deps (installs PyPI `{pypi_package}` into {})",
        p.display(),
        venv_dir().display()
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not CI): {msg}");
    None
}

/// A shared test corpus under the project's `../shared/data/<name>`
/// (`$UPSVISOR_SHARED_DATA/<name>` when set). Missing under CI: panics.
/// Missing elsewhere: prints why and returns `None`.
pub fn require_corpus(workspace_root: &Path, name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("UPSVISOR_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root.join("../shared/data"))
        .join(name);
    if dir.is_dir() {
        return Some(dir);
    }
    let msg = format!(
        "corpus {} not found (set UPSVISOR_SHARED_DATA to the folder holding {name}/)",
        dir.display()
    );
    if in_ci() {
        panic!("{msg}");
    }
    eprintln!("SKIPPED (not CI): {msg}");
    None
}

/// Whether this process runs as root (`id -u` is 0).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A free UDP port on 127.0.0.1 (racy by nature, like [`free_port`]).
pub fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind udp 127.0.0.1:0");
    s.local_addr().expect("local addr").port()
}

/// Looks `name` up in `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A free TCP port on 127.0.0.1 (racy by nature; peers that can bind port 0
/// and report it are better).
pub fn free_port() -> u16 {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

/// Waits until something accepts TCP connections on `addr`.
pub fn wait_for_port(addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listening on {addr} after {timeout:?}"))
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates `$TMPDIR/upsvisor-<tag>-<pid>-<n>`.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("upsvisor-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed on drop.
#[derive(Debug)]
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A test PKI for upsd's STARTTLS, made in `dir` with `openssl` and NSS's
/// `certutil`/`pk12util` (Debian `openssl`, `libnss3-tools`):
///
/// - `ca.pem`: the CA that signed upsd's certificate;
/// - `other.pem`: an unrelated CA;
/// - `db/`: the NSS database upsd reads (`CERTPATH`), holding the server
///   certificate for `localhost` and `127.0.0.1` under the nickname
///   `upsd`, database password `dbpw` (`CERTIDENT "upsd" "dbpw"`).
///
/// Tools missing under CI: panics; elsewhere: prints why and returns `None`.
pub fn upsd_tls_pki(dir: &Path) -> Option<()> {
    let openssl = require_peer(&["openssl"], "openssl")?;
    let certutil = require_peer(&["certutil"], "libnss3-tools")?;
    let pk12util = require_peer(&["pk12util"], "libnss3-tools")?;
    let run = |prog: &Path, args: &[&str]| {
        let out = std::process::Command::new(prog)
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run PKI tool");
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            prog.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for name in ["ca", "other"] {
        run(
            &openssl,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                &format!("{name}.key"),
                "-out",
                &format!("{name}.pem"),
                "-days",
                "2",
                "-subj",
                &format!("/CN=upsvisor test {name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    run(
        &openssl,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext.cnf");
    run(
        &openssl,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
    run(
        &openssl,
        &[
            "pkcs12",
            "-export",
            "-in",
            "srv.pem",
            "-inkey",
            "srv.key",
            "-certfile",
            "ca.pem",
            "-name",
            "upsd",
            "-out",
            "srv.p12",
            "-passout",
            "pass:p12pw",
        ],
    );
    std::fs::create_dir(dir.join("db")).expect("create db/");
    std::fs::write(dir.join("pw.txt"), "dbpw\n").expect("write pw.txt");
    run(&certutil, &["-N", "-d", "db", "-f", "pw.txt"]);
    run(
        &pk12util,
        &["-i", "srv.p12", "-d", "db", "-k", "pw.txt", "-W", "p12pw"],
    );
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_and_reports_missing() {
        assert!(require_peer(&["sh"], "dash").is_some());
        assert!(which("definitely-not-a-program-upsvisor").is_none());
        let d = TempDir::new("t");
        assert!(d.path().is_dir());
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }
}
