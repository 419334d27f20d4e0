/// Issue 15, item 4: disarmed unless the file says `armed = true`.
#[test]
fn a_config_is_disarmed_unless_it_says_armed() {
    let c = Config::parse_str("t.toml", GOOD).unwrap();
    assert!(!c.armed && !c.sequencer_config().is_armed());
    let c = Config::parse_str(
        "t.toml",
        &GOOD.replacen("version = 1", "version = 1\narmed = true", 1),
    )
    .unwrap();
    assert!(c.armed && c.sequencer_config().is_armed());
}

use std::time::Duration;

use super::credentials::VaultFile;
use super::*;

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = Config::parse_str("p.toml", &text);
        let _ = parse_toml::<VaultFile>("c.toml", &text);
    }

    #[test]
    fn mutated_good_config_never_panics(cut in 0usize..2000, insert in "[a-z_=\\[\\]\" 0-9.\n]{0,12}") {
        let mut text = GOOD.to_string();
        let at = text.char_indices().map(|(i, _)| i).nth(cut % GOOD.len()).unwrap_or(0);
        text.insert_str(at, &insert);
        if let Err(e) = Config::parse_str("p.toml", &text) {
            assert!(!e.to_string().is_empty());
        }
    }
}

const GOOD: &str = r#"
version = 1
journal = "journal.json"
[api]
listen = "127.0.0.1:9000"
token = "api"
[credentials]
file = "credentials.toml"
[poller]
period_s = 30
on_battery_period_s = 10
host_deadline_s = 5
max_concurrency = 4
[policy]
on_battery_for_s = 120
[sequencer]
final_action = "shutdown_return"
[[group]]
name = "batch"
order = -10
match = ["batch-*"]
shed_on_battery = true
[[device]]
id = "ups1"
kind = "nut"
address = "127.0.0.1:3493"
ups = "dummy"
credentials = "nut"
[[device.outlet]]
id = "main"
hosts = ["kvm1", "esx1"]
[[host]]
id = "kvm1"
transport = "ssh-libvirt"
address = "127.0.0.1:2222"
credentials = "kvm"
host_key = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU"
[[host]]
id = "esx1"
transport = "sim"
address = "esx1.lab"
"#;

fn dir(tag: &str) -> upsvisor_testkit::TempDir {
    upsvisor_testkit::TempDir::new(tag)
}

fn write(p: &Path, text: &str, mode: u32) {
    std::fs::write(p, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
}

const CREDS: &str = "[nut]\nusername = \"upsmon\"\npassword = \"s3cr3t-nut\"\n[kvm]\nusername = \"root\"\npassword_file = \"kvm.pw\"\n[api]\npassword = \"0123456789abcdef-token\"\n";

#[test]
fn shipped_example_parses() {
    let text = include_str!("../../dist/upsvisord.toml");
    let cfg = Config::parse_str("dist/upsvisord.toml", text).unwrap();
    assert_eq!(cfg.hosts.len(), 2);
    assert_eq!(cfg.groups.len(), 2);
    let creds = include_str!("../../dist/credentials.toml");
    let v: VaultFile = parse_toml("dist/credentials.toml", creds).unwrap();
    assert_eq!(v.0.len(), 3);
}

#[test]
fn good_config_parses_and_maps() {
    let cfg = Config::parse_str("t.toml", GOOD).unwrap();
    assert_eq!(cfg.hosts.len(), 2);
    assert_eq!(cfg.devices[0].outlets[0].hosts, ["kvm1", "esx1"]);
    let inv = cfg.inventory();
    assert_eq!(inv.hosts.len(), 2);
    assert_eq!(inv.outlets.len(), 1);
    let secs = Duration::from_secs;
    let mut poller = upsvisor_core::PollerConfig::default();
    poller
        .period(secs(30))
        .on_battery_period(secs(10))
        .host_deadline(secs(5))
        .max_concurrency(4);
    assert_eq!(cfg.poller_config(), poller);
    assert_eq!(cfg.sequencer_config().groups().len(), 1);
    // The policy line's whole effect: the same file without it, plus the
    // trigger it sets.
    let without =
        Config::parse_str("t.toml", &GOOD.replacen("on_battery_for_s = 120\n", "", 1)).unwrap();
    let mut policy = without.policy_config();
    assert_ne!(cfg.policy_config(), policy);
    policy.on_battery_for(Some(secs(120)));
    assert_eq!(cfg.policy_config(), policy);
}

#[test]
fn nut_starttls_and_login_are_strict() {
    let with = |extra: &str| {
        GOOD.replace(
            "ups = \"dummy\"\ncredentials = \"nut\"",
            &format!("ups = \"dummy\"\ncredentials = \"nut\"\n{extra}"),
        )
    };
    let cfg = Config::parse_str(
            "/etc/upsvisor/t.toml",
            &with("nut_starttls = true\nnut_ca_file = \"nut-ca.pem\"\nnut_tls_server_name = \"ups.lab\"\nnut_login = false"),
        )
        .unwrap();
    let d = &cfg.devices[0];
    assert!(d.nut_starttls);
    assert_eq!(
        d.nut_ca_file.as_deref(),
        Some(Path::new("/etc/upsvisor/nut-ca.pem")),
        "relative to the config file"
    );
    assert_eq!(d.nut_tls_server_name.as_deref(), Some("ups.lab"));
    assert_eq!(d.nut_login, Some(false));
    let plain = Config::parse_str("t.toml", GOOD).unwrap();
    assert!(!plain.devices[0].nut_starttls && plain.devices[0].nut_login.is_none());

    for (extra, key, words) in [
        ("nut_starttls = true", "device[0].nut_ca_file", "required"),
        (
            "nut_ca_file = \"ca.pem\"",
            "device[0].nut_ca_file",
            "only with nut_starttls",
        ),
        (
            "nut_tls_server_name = \"ups.lab\"",
            "device[0].nut_tls_server_name",
            "only with nut_starttls",
        ),
        (
            "nut_starttls = true\nnut_ca_file = \"\"",
            "device[0].nut_ca_file",
            "empty",
        ),
        (
            "nut_starttls = true\nnut_ca_file = \"ca.pem\"\nnut_tls_server_name = \"ups lab\"",
            "device[0].nut_tls_server_name",
            "not a DNS name",
        ),
        (
            "nut_starttls = \"yes\"",
            "device[0].nut_starttls",
            "invalid type",
        ),
        ("nut_tls = true", "device[0].nut_tls", "unknown field"),
    ] {
        let e = Config::parse_str("t.toml", &with(extra)).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{extra}: {e}");
        assert!(e.message.contains(words), "{extra}: {e}");
    }
    // LOGIN needs an account.
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace("credentials = \"nut\"", "nut_login = true"),
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("device[0].nut_login"), "{e}");
    // NUT keys on another kind are refused.
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace(
            "[[device.outlet]]",
            "[[device]]\nid = \"s\"\nkind = \"sim\"\nnut_starttls = true\n[[device.outlet]]",
        ),
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("device[1].nut_starttls"), "{e}");
    assert!(e.message.contains("only for kind = \"nut\""), "{e}");
}

#[test]
fn unknown_key_names_line_and_path() {
    let text = GOOD.replace("max_concurrency = 4", "max_concurrency = 4\nperiod = 3");
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    let line = text.lines().position(|l| l == "period = 3").unwrap() + 1;
    assert_eq!(e.line_col.map(|l| l.0), Some(line), "{e}");
    assert!(e.message.contains("unknown field `period`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("poller.period"), "{e}");
    let s = e.to_string();
    assert!(s.starts_with(&format!("t.toml:{line}:")), "{s}");
}

#[test]
fn unknown_key_in_array_table() {
    let text = GOOD.replace(
        "address = \"esx1.lab\"",
        "address = \"esx1.lab\"\nadress = \"x\"",
    );
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    assert!(e.message.contains("unknown field `adress`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("host[1].adress"), "{e}");
}

#[test]
fn bad_values_are_located() {
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace("period_s = 30", "period_s = \"30\""),
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("poller.period_s"), "{e}");
    assert!(e.line_col.is_some(), "{e}");
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace("transport = \"sim\"", "transport = \"telnet\""),
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[1].transport"), "{e}");
    assert!(e.message.contains("ssh-libvirt"), "{e}");
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace("hosts = [\"kvm1\", \"esx1\"]", "hosts = [\"kvm9\"]"),
    )
    .unwrap_err();
    assert_eq!(
        e.key.as_deref(),
        Some("device[0].outlet[0].hosts[0]"),
        "{e}"
    );
    let e = Config::parse_str("t.toml", &GOOD.replace("version = 1", "version = 2")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("version"), "{e}");
    let e = Config::parse_str("t.toml", "version = 1\n[api\n").unwrap_err();
    assert_eq!(e.line_col.map(|l| l.0), Some(2), "{e}");
    let e =
        Config::parse_str("t.toml", &GOOD.replace("kind = \"nut\"", "kind = \"usb\"")).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("device[0].kind"), "{e}");
}

#[test]
fn credentials_resolve_and_never_print() {
    let d = dir("cfg-good");
    write(&d.path().join("credentials.toml"), CREDS, 0o600);
    write(&d.path().join("kvm.pw"), "kvm-pass\n", 0o600);
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o644);
    let cfg = Config::load(&p).unwrap();
    let v = cfg.load_vault().unwrap();
    let kvm = v.get("kvm").unwrap();
    assert_eq!(kvm.creds.password.expose(), "kvm-pass");
    let dbg = format!("{v:?} {:?}", cfg.api_token(&v).unwrap());
    assert!(
        !dbg.contains("kvm-pass") && !dbg.contains("s3cr3t") && !dbg.contains("0123456789"),
        "{dbg}"
    );
    assert_eq!(
        cfg.api_token(&v).unwrap().unwrap().expose(),
        "0123456789abcdef-token"
    );
}

#[test]
fn missing_credential_file_is_named() {
    let d = dir("cfg-missing");
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o644);
    let e = Config::load(&p).unwrap().load_vault().unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("credentials.toml") && s.contains("credentials.file"),
        "{s}"
    );
    // A referenced password_file that is missing.
    write(&d.path().join("credentials.toml"), CREDS, 0o600);
    let e = Config::load(&p).unwrap().load_vault().unwrap_err();
    assert_eq!(e.key.as_deref(), Some("kvm.password_file"), "{e}");
    assert!(e.message.contains("kvm.pw"), "{e}");
}

#[cfg(unix)]
#[test]
fn world_readable_credential_file_is_refused() {
    let d = dir("cfg-mode");
    write(&d.path().join("credentials.toml"), CREDS, 0o644);
    write(&d.path().join("kvm.pw"), "kvm-pass\n", 0o600);
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o644);
    let e = Config::load(&p).unwrap().load_vault().unwrap_err();
    let s = e.to_string();
    assert!(
        s.contains("chmod 600") && s.contains("credentials.toml") && s.contains("644"),
        "{s}"
    );
    assert!(!s.contains("s3cr3t"), "{s}");
    // Group-readable password_file too.
    write(&d.path().join("credentials.toml"), CREDS, 0o600);
    write(&d.path().join("kvm.pw"), "kvm-pass\n", 0o640);
    let e = Config::load(&p).unwrap().load_vault().unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}

#[test]
fn short_api_token_is_a_config_error() {
    let d = dir("cfg-tok-len");
    write(
        &d.path().join("credentials.toml"),
        &CREDS.replace("0123456789abcdef-token", "short-tok"),
        0o600,
    );
    write(&d.path().join("kvm.pw"), "kvm-pass\n", 0o600);
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o644);
    let cfg = Config::load(&p).unwrap();
    let e = cfg.api_token(&cfg.load_vault().unwrap()).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("api.token"), "{e}");
    assert!(e.message.contains("at least 16"), "{e}");
    assert!(!e.to_string().contains("short-tok"), "{e}");
}

#[cfg(unix)]
#[test]
fn world_writable_or_foreign_config_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let d = dir("cfg-owner");
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o666);
    let e = Config::load(&p).unwrap_err();
    assert!(
        e.message.contains("writable by anyone") && e.message.contains("chmod o-w"),
        "{e}"
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(Config::load(&p).is_ok());
    // A file owned by another user (only root can make one).
    if rustix::process::geteuid().is_root() {
        std::os::unix::fs::chown(&p, Some(65534), None).unwrap();
        let e = Config::load(&p).unwrap_err();
        assert!(e.message.contains("owned by uid 65534"), "{e}");
        let creds = d.path().join("credentials.toml");
        write(&creds, CREDS, 0o600);
        std::os::unix::fs::chown(&creds, Some(65534), None).unwrap();
        let e = check_secret_file(&creds).unwrap_err();
        assert!(e.contains("owned by uid 65534"), "{e}");
    }
}

#[test]
fn plain_http_vsphere_needs_the_dangerous_setting() {
    let soap = |addr: &str, extra: &str| {
        format!(
            "version = 1\n[[host]]\nid = \"vc\"\ntransport = \"soap\"\naddress = \"{addr}\"\n{extra}"
        )
    };
    let e = Config::parse_str("t.toml", &soap("http://vc.lab/sdk", "")).unwrap_err();
    assert_eq!(
        e.key.as_deref(),
        Some("host[0].dangerous_allow_plain_http"),
        "{e}"
    );
    assert!(e.message.contains("in clear"), "{e}");
    let e = Config::parse_str("t.toml", &soap("HTTP://u:pw@vc.lab/sdk", "")).unwrap_err();
    assert!(!e.to_string().contains("pw@"), "{e}");
    let cfg = Config::parse_str(
        "t.toml",
        &soap("http://vc.lab/sdk", "dangerous_allow_plain_http = true"),
    )
    .unwrap();
    assert!(cfg.hosts[0].dangerous_allow_plain_http);
    assert!(Config::parse_str("t.toml", &soap("https://vc.lab/sdk", "")).is_ok());
    assert!(Config::parse_str("t.toml", &soap("vc.lab:443", "")).is_ok());
    let e = Config::parse_str("t.toml", &soap("ftp://vc.lab", "")).unwrap_err();
    assert!(e.message.contains("only https://"), "{e}");
    // The setting means nothing for SSH: refused, not ignored.
    let e = Config::parse_str(
            "t.toml",
            "version = 1\n[[host]]\nid = \"k\"\ntransport = \"sim\"\naddress = \"k\"\ndangerous_allow_plain_http = true\n",
        )
        .unwrap_err();
    assert_eq!(
        e.key.as_deref(),
        Some("host[0].dangerous_allow_plain_http"),
        "{e}"
    );
}

#[test]
fn webhook_schemes_and_api_bounds() {
    let with = |extra: &str| Config::parse_str("t.toml", &format!("{GOOD}\n{extra}"));
    assert!(
        with("[webhook]\nurl = \"https://recv.lab/hook\"\ntoken = \"api\"\nca_file = \"ca.pem\"")
            .is_ok()
    );
    assert!(with("[webhook]\nurl = \"http://recv.lab/hook\"").is_ok());
    let e = with("[webhook]\nurl = \"http://recv.lab/hook\"\ntoken = \"api\"").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("webhook.url"), "{e}");
    assert!(e.message.contains("in clear"), "{e}");
    assert!(with("[webhook]\nurl = \"http://recv.lab/hook\"\ntoken = \"api\"\ndangerous_allow_plain_http = true").is_ok());
    let e = with("[webhook]\nurl = \"http://u:s3cret@recv.lab/hook\"").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
    let e = with("[webhook]\nurl = \"http://recv.lab/\"\nca_file = \"ca.pem\"").unwrap_err();
    assert_eq!(e.key.as_deref(), Some("webhook.ca_file"), "{e}");
    let cfg = Config::parse_str("t.toml", GOOD).unwrap();
    assert_eq!(cfg.api.limits(), crate::serve::Limits::default());
    let api = |extra: &str| {
        Config::parse_str(
            "t.toml",
            &GOOD.replace("token = \"api\"", &format!("token = \"api\"\n{extra}")),
        )
    };
    let cfg = api("max_connections = 64\nmax_event_streams = 8\nheader_timeout_s = 5\nbody_timeout_s = 7\nallowed_hosts = [\"ups-ctl.lab\"]").unwrap();
    assert_eq!(cfg.api.limits().max_connections, 64);
    assert_eq!(cfg.api.limits().header_timeout, Duration::from_secs(5));
    assert_eq!(cfg.api.allowed_hosts, ["ups-ctl.lab"]);
    for (extra, key) in [
        ("max_connections = 0", "api.max_connections"),
        ("max_event_streams = 300", "api.max_event_streams"),
        ("header_timeout_s = 0", "api.header_timeout_s"),
        ("body_timeout_s = 0", "api.body_timeout_s"),
    ] {
        let e = api(extra).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{extra}: {e}");
    }
}

#[test]
fn unknown_key_in_credentials_file() {
    let d = dir("cfg-credkey");
    write(
        &d.path().join("credentials.toml"),
        "[nut]\nuser = \"x\"\n",
        0o600,
    );
    let p = d.path().join("upsvisord.toml");
    write(&p, GOOD, 0o644);
    let e = Config::load(&p).unwrap().load_vault().unwrap_err();
    assert!(e.message.contains("unknown field `user`"), "{e}");
    assert_eq!(e.key.as_deref(), Some("nut.user"), "{e}");
    assert_eq!(e.line_col.map(|l| l.0), Some(2), "{e}");
}

const SNMP3: &str = r#"
version = 1
[credentials]
file = "credentials.toml"
[[device]]
id = "pdu1"
kind = "snmp"
address = "127.0.0.1:1161"
snmp_version = "3"
snmp_auth = "sha256"
credentials = "snmp"
[[device.outlet]]
id = "a"
hosts = ["kvm1"]
[[host]]
id = "kvm1"
transport = "sim"
address = "kvm1.lab"
"#;

const SNMP3_CREDS: &str = "[snmp]\nusername = \"upsadmin\"\nauth_password = \"auth-secret-1\"\npriv_password_file = \"priv.pw\"\n";

#[test]
fn snmp_v3_schema_is_strict_and_names_the_key() {
    assert!(Config::parse_str("t.toml", SNMP3).is_ok());
    let bad =
        |from: &str, to: &str| Config::parse_str("t.toml", &SNMP3.replace(from, to)).unwrap_err();
    let e = bad("snmp_version = \"3\"", "snmp_version = \"3c\"");
    assert_eq!(e.key.as_deref(), Some("device[0].snmp_version"), "{e}");
    let e = bad("snmp_auth = \"sha256\"", "snmp_auth = \"md5\"");
    assert_eq!(e.key.as_deref(), Some("device[0].snmp_auth"), "{e}");
    assert!(e.message.contains("sha, sha256"), "{e}");
    let e = bad("snmp_auth = \"sha256\"\n", "");
    assert_eq!(e.key.as_deref(), Some("device[0].snmp_auth"), "{e}");
    assert!(e.message.contains("required"), "{e}");
    let e = bad(
        "snmp_auth = \"sha256\"",
        "snmp_auth = \"sha\"\nsnmp_priv = \"des\"",
    );
    assert_eq!(e.key.as_deref(), Some("device[0].snmp_priv"), "{e}");
    let e = bad("credentials = \"snmp\"\n", "");
    assert_eq!(e.key.as_deref(), Some("device[0].credentials"), "{e}");
    // v3 keys on a v2c device are refused, not ignored.
    let e = bad("snmp_version = \"3\"", "snmp_version = \"2c\"");
    assert_eq!(e.key.as_deref(), Some("device[0].snmp_auth"), "{e}");
    assert!(e.message.contains("snmp_version = \"3\""), "{e}");
    assert!(
        Config::parse_str(
            "t.toml",
            &SNMP3.replace("sha256", "sha\"\nsnmp_priv = \"none")
        )
        .is_ok()
    );
}

#[test]
fn snmp_v3_credentials_resolve_check_and_never_print() {
    let d = dir("cfg-snmp3");
    let p = d.path().join("upsvisord.toml");
    write(&p, SNMP3, 0o644);
    write(&d.path().join("credentials.toml"), SNMP3_CREDS, 0o600);
    write(&d.path().join("priv.pw"), "priv-secret-2\n", 0o600);
    let cfg = Config::load(&p).unwrap();
    let v = cfg.load_vault().unwrap();
    let r = v.get("snmp").unwrap();
    assert_eq!(r.auth_password.as_ref().unwrap().expose(), "auth-secret-1");
    assert_eq!(r.priv_password.as_ref().unwrap().expose(), "priv-secret-2");
    let dbg = format!("{v:?}");
    assert!(
        !dbg.contains("auth-secret") && !dbg.contains("priv-secret"),
        "{dbg}"
    );
    let (parts, errors) = crate::build::from_config(&cfg, &v);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(parts.devices.len(), 1);

    let vault_err = |creds: &str| {
        write(&d.path().join("credentials.toml"), creds, 0o600);
        let e = Config::load(&p).unwrap().load_vault().unwrap_err();
        let s = e.to_string();
        assert!(
            !s.contains("auth-secret") && !s.contains("priv-secret"),
            "secret in {s}"
        );
        e
    };
    let e = vault_err("[snmp]\nusername = \"upsadmin\"\npriv_password = \"priv-secret-2\"\n");
    assert_eq!(e.key.as_deref(), Some("snmp.auth_password"), "{e}");
    assert!(e.to_string().contains("credentials.toml"), "{e}");
    assert!(e.to_string().contains("device[0] `pdu1`"), "{e}");
    let e = vault_err(
        "[snmp]\nusername = \"upsadmin\"\nauth_password = \"short\"\npriv_password = \"priv-secret-2\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("snmp.auth_password"), "{e}");
    assert!(e.message.contains("at least 8"), "{e}");
    assert!(!e.to_string().contains("short\""), "{e}");
    let e = vault_err("[snmp]\nusername = \"upsadmin\"\nauth_password = \"auth-secret-1\"\n");
    assert_eq!(e.key.as_deref(), Some("snmp.priv_password"), "{e}");
    let e = vault_err("[snmp]\nusername = \"upsadmin\"\npassword = \"auth-secret-1\"\n");
    assert_eq!(e.key.as_deref(), Some("snmp.password"), "{e}");
    assert!(e.message.contains("auth_password"), "{e}");
    let e =
        vault_err("[snmp]\nauth_password = \"auth-secret-1\"\npriv_password = \"priv-secret-2\"\n");
    assert_eq!(e.key.as_deref(), Some("snmp.username"), "{e}");
    let e = vault_err(
        "[snmp]\nusername = \"u\"\nauth_password = \"auth-secret-1\"\nauth_password_file = \"priv.pw\"\npriv_password = \"priv-secret-2\"\n",
    );
    assert_eq!(e.key.as_deref(), Some("snmp.auth_password"), "{e}");
    assert!(e.message.contains("not both"), "{e}");
}

/// Issue 15, item 8: host errors say the line and name the host; a
/// duplicate id names the line of the second and the first's place.
#[test]
fn host_errors_name_the_line_and_the_host() {
    let line_of = |text: &str, l: &str| text.lines().position(|x| x == l).unwrap() + 1;
    let text = GOOD.replace("id = \"esx1\"", "id = \"kvm1\"");
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[1].id"), "{e}");
    assert!(
        e.message
            .contains("`kvm1` is used twice (first by host[0])"),
        "{e}"
    );
    let second = text
        .lines()
        .collect::<Vec<_>>()
        .iter()
        .rposition(|x| *x == "id = \"kvm1\"")
        .unwrap()
        + 1;
    assert_eq!(e.line_col.map(|l| l.0), Some(second), "{e}");
    assert!(
        e.to_string().starts_with(&format!("t.toml:{second}:")),
        "{e}"
    );

    // An unknown transport: its line, and which host.
    let text = GOOD.replace("transport = \"sim\"", "transport = \"telnet\"");
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[1].transport"), "{e}");
    let l = line_of(&text, "transport = \"telnet\"");
    assert_eq!(e.line_col.map(|l| l.0), Some(l), "{e}");
    assert!(
        e.message
            .ends_with(&format!("(one of: {TRANSPORTS}) (host `esx1`)")),
        "{e}"
    );

    // Checks after parsing are located too: the value's line, or the
    // host's table when the key is absent.
    let text = GOOD.replace("address = \"esx1.lab\"", "address = \"\"");
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[1].address"), "{e}");
    assert_eq!(
        e.line_col.map(|l| l.0),
        Some(line_of(&text, "address = \"\"")),
        "{e}"
    );
    assert!(e.message.ends_with("(host `esx1`)"), "{e}");
    let text = GOOD.replace(
        "hosts = [\"kvm1\", \"esx1\"]",
        "hosts = [\"kvm1\", \"kvm9\"]",
    );
    let e = Config::parse_str("t.toml", &text).unwrap_err();
    assert_eq!(
        e.line_col.map(|l| l.0),
        Some(line_of(&text, "hosts = [\"kvm1\", \"kvm9\"]")),
        "{e}"
    );
    assert!(e.message.ends_with("(device `ups1`)"), "{e}");
    let e = Config::parse_str(
        "t.toml",
        &GOOD.replace("listen = \"127.0.0.1:9000\"", "listen = \"nine\""),
    )
    .unwrap_err();
    assert_eq!(e.key.as_deref(), Some("api.listen"), "{e}");
    assert!(e.line_col.is_some(), "{e}");
}

#[test]
fn transport_names_round_trip() {
    let names: Vec<&str> = TRANSPORTS.split(", ").collect();
    assert_eq!(names.len(), 8);
    for n in names {
        let t = Transport::parse(n).unwrap();
        assert_eq!(t.to_string(), n);
        assert_eq!(n.parse::<Transport>(), Ok(t));
        assert_eq!(t.is_vsphere(), matches!(n, "soap" | "mob"), "{n}");
    }
    let e = "SOAP".parse::<Transport>().unwrap_err();
    assert!(e.contains("unknown transport `SOAP`"), "{e}");
}

#[test]
fn shutdown_order_and_plain_servers_are_checked() {
    // A plain server after the hypervisors: accepted, and the order is in
    // the inventory the engine gets.
    let text = format!(
        "{GOOD}[[host]]\nid = \"nas\"\ntransport = \"ssh-server\"\naddress = \"nas.lab\"\ncredentials = \"kvm\"\nhost_key = \"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\"\nshutdown_command = [\"sudo\", \"/sbin/poweroff\"]\nafter = [\"kvm1\", \"esx1\"]\n"
    );
    let text = text.replace(
        "hosts = [\"kvm1\", \"esx1\"]",
        "hosts = [\"kvm1\", \"esx1\", \"nas\"]",
    );
    let c = Config::parse_str("t.toml", &text).unwrap();
    let inv = c.inventory();
    let nas = inv.host(&"nas".into()).unwrap();
    assert_eq!(nas.transport, upsvisor_core::TransportKind::SshServer);
    assert_eq!(
        nas.after,
        [upsvisor_core::HostId::from("kvm1"), "esx1".into()]
    );

    // An unknown host in `after`: its key and line.
    let bad = text.replace(
        "after = [\"kvm1\", \"esx1\"]",
        "after = [\"kvm1\", \"nope\"]",
    );
    let e = Config::parse_str("t.toml", &bad).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[2].after[1]"), "{e}");
    assert!(e.message.contains("no [[host]] has id `nope`"), "{e}");
    let line = bad.lines().position(|l| l.starts_with("after =")).unwrap() + 1;
    assert_eq!(e.line_col.map(|l| l.0), Some(line), "{e}");

    // A cycle.
    let cyc = text.replace(
        "id = \"kvm1\"\ntransport = \"ssh-libvirt\"",
        "id = \"kvm1\"\nafter = [\"nas\"]\ntransport = \"ssh-libvirt\"",
    );
    let e = Config::parse_str("t.toml", &cyc).unwrap_err();
    assert!(
        e.message
            .contains("the shutdown order has a cycle: kvm1 -> nas -> kvm1"),
        "{e}"
    );
    assert_eq!(e.key.as_deref(), Some("host[0].after"), "{e}");
    assert!(!e.to_string().contains("configuration error at"), "{e}");
    let line = cyc.lines().position(|l| l == "after = [\"nas\"]").unwrap() + 1;
    assert_eq!(e.line_col.map(|l| l.0), Some(line), "{e}");
    let dup = text.replace(
        "after = [\"kvm1\", \"esx1\"]",
        "after = [\"kvm1\", \"kvm1\"]",
    );
    let e = Config::parse_str("t.toml", &dup).unwrap_err();
    assert!(e.message.contains("names `kvm1` twice"), "{e}");
    let blank = text.replace("[\"sudo\", \"/sbin/poweroff\"]", "[\"sudo\", \"\"]");
    let e = Config::parse_str("t.toml", &blank).unwrap_err();
    assert!(e.message.contains("empty argument"), "{e}");

    // A shutdown command on a hypervisor is refused.
    let hv = text.replace(
        "host_key = \"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\"\n[[host]]\nid = \"esx1\"",
        "host_key = \"SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU\"\nshutdown_command = [\"poweroff\"]\n[[host]]\nid = \"esx1\"",
    );
    let e = Config::parse_str("t.toml", &hv).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[0].shutdown_command"), "{e}");
    assert!(
        e.message.contains("only for transport = \"ssh-server\""),
        "{e}"
    );
    let empty = text.replace("[\"sudo\", \"/sbin/poweroff\"]", "[]");
    let e = Config::parse_str("t.toml", &empty).unwrap_err();
    assert!(e.message.contains("must name a program"), "{e}");

    // A host key that does not parse is refused at load, with its line.
    let pin = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
    let badkey = text.replacen(pin, "SHA256:nope", 1);
    let e = Config::parse_str("t.toml", &badkey).unwrap_err();
    assert_eq!(e.key.as_deref(), Some("host[0].host_key"), "{e}");
    assert!(e.message.contains("not a valid SHA256: fingerprint"), "{e}");
    assert!(e.line_col.is_some(), "{e}");

    // Valid but doing less than it seems: warnings, not errors.
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    let off = text.replace("[sequencer]\n", "[sequencer]\nshutdown_hosts = false\n");
    assert_ne!(off, text, "the fixture has a [sequencer] table");
    let w = Config::parse_str("t.toml", &off).unwrap().warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].0, "order nas");
    assert!(
        w[0].1
            .starts_with("WARNING: after = [kvm1, esx1] has no effect"),
        "{w:?}"
    );
    // The NAS on a second UPS, after hosts the first one feeds.
    let split = text
        .replace(
            "hosts = [\"kvm1\", \"esx1\", \"nas\"]",
            "hosts = [\"kvm1\", \"esx1\"]\n[[device]]\nid = \"ups2\"\nkind = \"nut\"\naddress = \"127.0.0.1:3493\"\nups = \"other\"\n[[device.outlet]]\nid = \"main\"\nhosts = [\"nas\"]",
        );
    let w = Config::parse_str("t.toml", &split).unwrap().warnings();
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].1
            .contains("after `kvm1`, which another supply feeds (ups1 vs ups2)"),
        "{w:?}"
    );
}

/// Issue 15, item 3: `[[hook]]` maps to the core's hooks, and each mistake
/// is refused at its key and line.
#[test]
fn hooks_parse_map_and_refuse_mistakes_at_their_line() {
    let hooks = r#"
[[hook]]
name = "flush"
point = "before_group"
group = "batch"
command = ["/bin/true"]
deadline = "45s"
blocking = true
[[hook]]
name = "unexport"
point = "before_host_shutdown"
host = "kvm1"
on = "kvm1"
command = ["/usr/local/sbin/unexport", "--all"]
deadline = "1m"
[[hook]]
name = "page"
point = "on_battery"
command = ["logger", "on battery"]
deadline = "5s"
"#;
    let good = GOOD.replacen(
        "final_action = \"shutdown_return\"",
        "final_action = \"shutdown_return\"\nforce_host_after_s = 900",
        1,
    );
    let text = format!("{good}{hooks}");
    let cfg = Config::parse_str("t.toml", &text).unwrap();
    let seq = cfg.sequencer_config();
    let core = seq.hooks();
    assert_eq!(core.len(), 3);
    assert_eq!(
        core[0].point,
        upsvisor_core::HookPoint::BeforeGroup {
            group: "batch".into()
        }
    );
    assert!(core[0].blocking && core[0].holds());
    assert_eq!(core[0].deadline, Duration::from_secs(45));
    assert_eq!(core[1].deadline, Duration::from_secs(60));
    assert!(!core[1].blocking);
    assert_eq!(core[2].point, upsvisor_core::HookPoint::OnBattery);

    let refused = |from: &str, to: &str, key: &str, says: &str, line_of: &str| {
        let bad = text.replacen(from, to, 1);
        assert_ne!(bad, text, "{from}");
        let e = Config::parse_str("t.toml", &bad).unwrap_err();
        assert_eq!(e.key.as_deref(), Some(key), "{e}");
        assert!(e.message.contains(says), "{e}");
        let line = bad
            .lines()
            .collect::<Vec<_>>()
            .iter()
            .rposition(|l| l.starts_with(line_of))
            .unwrap()
            + 1;
        assert_eq!(e.line_col.map(|l| l.0), Some(line), "{e}");
    };
    refused(
        "group = \"batch\"",
        "group = \"nope\"",
        "hook[0].group",
        "no [[group]] is named `nope`",
        "group = \"nope\"",
    );
    refused(
        "host = \"kvm1\"",
        "host = \"kvm9\"",
        "hook[1].host",
        "no [[host]] has id `kvm9`",
        "host = \"kvm9\"",
    );
    refused(
        "command = [\"/bin/true\"]",
        "command = []",
        "hook[0].command",
        "give the program",
        "command = []",
    );
    refused(
        "deadline = \"45s\"",
        "deadline = \"0s\"",
        "hook[0].deadline",
        "at least 1 s",
        "deadline = \"0s\"",
    );
    refused(
        "deadline = \"45s\"",
        "deadline = \"soon\"",
        "hook[0].deadline",
        "not a duration",
        "deadline = \"soon\"",
    );
    // `on` only over SSH: esx1 is a sim host.
    refused(
        "on = \"kvm1\"",
        "on = \"esx1\"",
        "hook[1].on",
        "not SSH",
        "on = \"esx1\"",
    );
    refused(
        "point = \"on_battery\"",
        "point = \"sometimes\"",
        "hook[2].point",
        "one of: on_battery",
        "point = \"sometimes\"",
    );
    refused(
        "deadline = \"5s\"",
        "deadline = \"5s\"\nblocking = true",
        "hook[2].blocking",
        "holds nothing",
        "blocking = true",
    );
    // Blocking without a forced deadline: nothing would end a hold.
    refused(
        "force_host_after_s = 900",
        "force_host_after_s = 0",
        "hook[0].blocking",
        "needs sequencer.force_host_after_s",
        "blocking = true",
    );
    refused(
        "name = \"page\"",
        "name = \"flush\"",
        "hook[2].name",
        "used twice",
        "name = \"flush\"",
    );
}
