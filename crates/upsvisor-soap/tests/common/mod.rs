//! Shared test helpers: build the Go simulator harness once, start one
//! simulator per test, read its ground truth.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

use upsvisor_core::{Credentials, HostInventory, PowerState, ToolsState};
use upsvisor_soap::{HostSelector, SoapConfig};
use upsvisor_testkit::KillOnDrop;

const GOVMOMI: &str = "/usr/share/gocode/src/github.com/vmware/govmomi/simulator";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
}

fn newest_source(dir: &Path) -> SystemTime {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "go"))
                .filter_map(|e| e.metadata().ok()?.modified().ok())
                .max()
                .unwrap_or(SystemTime::UNIX_EPOCH)
        })
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

fn build() -> Result<PathBuf, String> {
    let src = repo_root()
        .join("harness/vcsim")
        .canonicalize()
        .map_err(|e| e.to_string())?;
    let out_dir = target_dir().join("vcsim");
    let bin = out_dir.join("vcsim");
    if let Ok(m) = std::fs::metadata(&bin) {
        if m.modified().map_err(|e| e.to_string())? >= newest_source(&src) {
            return Ok(bin);
        }
    }
    // GOPATH mode: the harness is linked into a private GOPATH next to
    // Debian's, where govmomi lives.
    let gopath = out_dir.join("gopath");
    let link = gopath.join("src/upsvisor-vcsim");
    std::fs::create_dir_all(gopath.join("src")).map_err(|e| e.to_string())?;
    if std::fs::read_link(&link).ok().as_deref() != Some(src.as_path()) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&src, &link).map_err(|e| e.to_string())?;
    }
    // Build to a private name and rename: concurrent builders never see a
    // half-written binary.
    let tmp = out_dir.join(format!("vcsim.{}.tmp", std::process::id()));
    let res = Command::new("go")
        .args(["build", "-o"])
        .arg(&tmp)
        .arg("upsvisor-vcsim")
        .env("GO111MODULE", "off")
        .env("GOPATH", format!("/usr/share/gocode:{}", gopath.display()))
        .env("GOFLAGS", "")
        .env("GOCACHE", out_dir.join("gocache"))
        .output()
        .map_err(|e| format!("running go: {e}"))?;
    if !res.status.success() {
        return Err(format!(
            "go build failed:\n{}",
            String::from_utf8_lossy(&res.stderr)
        ));
    }
    std::fs::rename(&tmp, &bin).map_err(|e| e.to_string())?;
    Ok(bin)
}

/// The harness binary, built once per test process. `None` (skip) when Go
/// or govmomi is missing outside CI; under CI that panics.
pub fn harness() -> Option<PathBuf> {
    upsvisor_testkit::require_peer(&["go"], "golang-go")?;
    if !Path::new(GOVMOMI).is_dir() {
        let msg = format!("{GOVMOMI} missing: install golang-github-vmware-govmomi-dev");
        assert!(!upsvisor_testkit::in_ci(), "{msg}");
        eprintln!("SKIPPED (not CI): {msg}");
        return None;
    }
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(build) {
        Ok(p) => Some(p.clone()),
        Err(e) => panic!("building the vcsim harness: {e}"),
    }
}

/// One running simulator.
pub struct Sim {
    _child: KillOnDrop,
    pub url: String,
    pub thumbprint: String,
    pub ctl: String,
    pub mode: String,
}

#[derive(Deserialize)]
struct Hello {
    url: String,
    thumbprint: String,
    ctl: String,
    mode: String,
}

impl Sim {
    /// Starts the harness with `args`; `None` when the peer is missing (not CI).
    pub fn start(args: &[&str]) -> Option<Sim> {
        let bin = harness()?;
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start vcsim");
        let stdout = child.stdout.take().expect("stdout");
        let child = KillOnDrop(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("vcsim did not start");
        let hello: Hello =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("vcsim said {line:?}: {e}"));
        Some(Sim {
            _child: child,
            url: hello.url,
            thumbprint: hello.thumbprint,
            ctl: hello.ctl,
            mode: hello.mode,
        })
    }

    /// GET on the control server; panics unless 200.
    pub fn ctl(&self, path: &str) -> String {
        let addr = self.ctl.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).expect("connect ctl");
        write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").expect("write ctl");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read ctl");
        let (head, body) = out.split_once("\r\n\r\n").expect("http reply");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{path}: {head}\n{body}"
        );
        body.to_owned()
    }

    /// POSTs a SOAP body with curl (cookies in `jar`) and returns the
    /// reply's bytes as the server sent them; panics unless HTTP 2xx.
    pub fn curl(&self, jar: &str, body: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args([
                "-sk",
                "--fail-with-body",
                "-b",
                jar,
                "-c",
                jar,
                "-H",
                "Content-Type: text/xml",
                "--data-binary",
                "@-",
            ])
            .arg(&self.url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().expect("stdin").write_all(body.as_bytes())?;
                c.wait_with_output()
            })
            .expect("curl");
        assert!(
            out.status.success(),
            "curl failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        out.stdout
    }

    pub fn truth(&self) -> Truth {
        serde_json::from_str(&self.ctl("/truth")).expect("truth json")
    }

    /// A config for this simulator, pinned to its certificate.
    pub fn config(&self, host: HostSelector) -> SoapConfig {
        let mut cfg = SoapConfig::new(&self.url, Credentials::new("user", "pass"))
            .host(host)
            .timeout(Duration::from_secs(20))
            .task_timeout(Duration::from_secs(20));
        if self.thumbprint.is_empty() {
            cfg = cfg.dangerous_allow_plain_http(true);
        } else {
            cfg = cfg.pin_thumbprint(&self.thumbprint).expect("thumbprint");
        }
        cfg
    }

    #[cfg(feature = "ureq")]
    pub fn transport(&self, host: HostSelector) -> upsvisor_soap::SoapTransport {
        upsvisor_soap::SoapTransport::new(self.config(host)).expect("transport")
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct TruthVm {
    #[serde(rename = "ref")]
    pub moref: String,
    pub name: String,
    pub instance_uuid: String,
    pub ip_address: String,
    pub net_ips: Vec<String>,
    pub power_state: String,
    pub num_cpu: u32,
    pub memory_mb: u64,
    pub guest_full_name: String,
    pub tools_running_status: String,
    pub mode: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct TruthHost {
    #[serde(rename = "ref")]
    pub moref: String,
    pub name: String,
    pub datacenter: String,
    pub product_name: String,
    pub product_version: String,
    pub product_build: String,
    pub connection_state: String,
    pub power_state: String,
    pub in_maintenance: bool,
    pub dark: bool,
    pub vms: Vec<TruthVm>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Truth {
    pub mode: String,
    pub hosts: Vec<TruthHost>,
}

impl Truth {
    pub fn host(&self, name: &str) -> &TruthHost {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .expect("host in truth")
    }

    pub fn vm(&self, uuid: &str) -> (&TruthHost, &TruthVm) {
        self.hosts
            .iter()
            .find_map(|h| {
                h.vms
                    .iter()
                    .find(|v| v.instance_uuid == uuid)
                    .map(|v| (h, v))
            })
            .expect("vm in truth")
    }
}

/// Every field of every VM of `host`, and the host's own info, as the truth says.
pub fn assert_matches(inv: &HostInventory, th: &TruthHost) {
    assert_eq!(inv.info.hostname.as_deref(), Some(th.name.as_str()));
    assert_eq!(inv.info.product.as_deref(), Some(th.product_name.as_str()));
    assert_eq!(
        inv.info.version.as_deref(),
        Some(th.product_version.as_str())
    );
    assert_eq!(inv.info.build.as_deref(), Some(th.product_build.as_str()));
    let got: BTreeMap<&str, _> = inv.vms.iter().map(|v| (v.id.as_str(), v)).collect();
    let want: BTreeMap<&str, _> = th
        .vms
        .iter()
        .map(|v| (v.instance_uuid.as_str(), v))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "VM set of {}",
        th.name
    );
    for (id, v) in got {
        let t = want[id];
        assert_eq!(v.name, t.name);
        let power = match t.power_state.as_str() {
            "poweredOn" => PowerState::PoweredOn,
            "poweredOff" => PowerState::PoweredOff,
            "suspended" => PowerState::Suspended,
            _ => PowerState::Unknown,
        };
        assert_eq!(v.power, power, "{}", t.name);
        assert_eq!(v.vcpus, Some(t.num_cpu), "{}", t.name);
        assert_eq!(v.memory_mib, Some(t.memory_mb), "{}", t.name);
        assert_eq!(
            v.guest_os.as_deref(),
            Some(t.guest_full_name.as_str()).filter(|s| !s.is_empty())
        );
        let tools = match t.tools_running_status.as_str() {
            "guestToolsRunning" => ToolsState::Running,
            "guestToolsNotRunning" => ToolsState::NotRunning,
            _ => ToolsState::Unknown,
        };
        assert_eq!(v.tools, tools, "{}", t.name);
        let mut ips: Vec<IpAddr> = Vec::new();
        for s in std::iter::once(&t.ip_address).chain(&t.net_ips) {
            if let Ok(ip) = s.parse() {
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
        assert_eq!(v.ips, ips, "{}", t.name);
    }
}
