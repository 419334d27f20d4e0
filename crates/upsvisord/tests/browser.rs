//! The web page in headless Chromium (Debian `chromium`): the page's own
//! JavaScript fetches the API and renders the VM table per feed and host,
//! the power state and the plan. `#static` skips the live stream so the
//! browser's virtual-time budget can settle.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use upsvisor_testkit::{KillOnDrop, TempDir, require_peer};

#[test]
fn page_renders_in_headless_chromium() {
    let Some(chromium) = require_peer(
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
        "chromium",
    ) else {
        return;
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_upsvisord"))
        .args(["run", "--demo", "--listen", "127.0.0.1:0", "--speed", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let _daemon = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string();
    // Let the first poll land.
    std::thread::sleep(std::time::Duration::from_millis(500));
    let profile = TempDir::new("chromium-profile");
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg("--dump-dom")
        .arg(format!("{url}#static"))
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        dom.contains("data-ready=\"1\""),
        "page script never finished:\n{dom}"
    );
    for h in ["esx01", "esx10"] {
        assert!(dom.contains(&format!("{h} · {h}.lab")), "{h} missing");
    }
    assert!(dom.contains("<h3>feed ups1/main</h3>"));
    // One row per VM (the script's own source also holds "<tr><td>", so
    // count rendered names).
    assert_eq!(dom.matches("<tr><td>vm-").count(), 200, "one row per VM");
    assert!(dom.contains("<tr><td>vcenter01</td>"));
    assert!(dom.contains("ups1: OL"), "power state shown");
    assert!(dom.contains("total "), "plan shown");
}
