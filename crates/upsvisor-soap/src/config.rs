//! Configuration of a `SoapTransport`.

use std::time::Duration;

use upsvisor_traits::{Credentials, Error};
pub use upsvisor_vihttp::Thumbprint;

/// Which host of the endpoint this transport speaks for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HostSelector {
    /// The endpoint's only host: right for an ESXi host reached directly.
    /// Through vCenter (more than one host) this is a configuration error.
    #[default]
    Only,
    /// The host whose `HostSystem.name` is this (vCenter: the name the host
    /// was added under).
    Name(String),
    /// The host with this managed-object id (`host-21`, `ha-host`).
    MoRef(String),
}

/// Settings of a `SoapTransport`.
///
/// Secure by default: the server certificate is verified against the
/// public web roots plus [`SoapConfig::add_root_certificate_der`]; a
/// self-signed ESXi certificate is accepted only when its SHA-256
/// thumbprint is pinned ([`SoapConfig::pin_thumbprint`]); plain `http://`
/// and unverified TLS need options named `dangerous_...`.
///
/// ```
/// use std::time::Duration;
/// use upsvisor_traits::Credentials;
/// use upsvisor_soap::{HostSelector, SoapConfig};
///
/// let cfg = SoapConfig::new("https://vcenter.example/sdk", Credentials::new("ups", "secret"))
///     .host(HostSelector::Name("esx1.example".into()))
///     .pin_thumbprint("89:79:B1:35:05:FC:04:34:BF:7C:0C:1C:64:33:F3:2B:81:37:E5:AB:A3:D4:24:3A:08:0A:19:EB:02:37:0D:72")
///     .unwrap()
///     .timeout(Duration::from_secs(10));
/// assert_eq!(cfg.url(), "https://vcenter.example/sdk");
/// assert!(!format!("{cfg:?}").contains("secret"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SoapConfig {
    /// Endpoint: `https://host` (the `/sdk` path is added) or a full URL.
    pub(crate) url: String,
    /// Account; the password is a [`upsvisor_traits::Secret`].
    pub(crate) credentials: Credentials,
    /// Which host this transport speaks for.
    pub(crate) host: HostSelector,
    /// Pinned certificate thumbprints (any one matching is enough).
    pub(crate) pinned: Vec<Thumbprint>,
    /// Extra trusted roots (DER).
    pub(crate) extra_roots: Vec<Vec<u8>>,
    /// Accept any certificate. Only for labs.
    pub(crate) dangerous_accept_invalid_certs: bool,
    /// Allow `http://` URLs, which send the password in clear. Only for tests.
    pub(crate) dangerous_allow_plain_http: bool,
    /// Deadline of one HTTP exchange (connect, send, receive).
    pub(crate) timeout: Duration,
    /// How long a task (power call) may run before the call fails.
    pub(crate) task_timeout: Duration,
    /// Largest reply accepted, in bytes.
    pub(crate) max_reply_bytes: usize,
    /// Deepest XML nesting accepted.
    pub(crate) max_xml_depth: usize,
    /// `maxObjects` per RetrievePropertiesEx page.
    pub(crate) page_size: u32,
    /// How long after its answer arrived a fetch may serve other hosts of
    /// the session (see [`SoapConfig::fetch_reuse`]).
    pub(crate) fetch_reuse: Duration,
}

impl Default for SoapConfig {
    fn default() -> Self {
        SoapConfig {
            url: String::new(),
            credentials: Credentials::new("", ""),
            host: HostSelector::Only,
            pinned: Vec::new(),
            extra_roots: Vec::new(),
            dangerous_accept_invalid_certs: false,
            dangerous_allow_plain_http: false,
            timeout: Duration::from_secs(30),
            task_timeout: Duration::from_secs(300),
            max_reply_bytes: 64 << 20,
            max_xml_depth: 48,
            page_size: 1000,
            fetch_reuse: Duration::from_secs(3),
        }
    }
}

impl SoapConfig {
    /// A configuration for `url` with `credentials`, everything else default.
    pub fn new(url: impl Into<String>, credentials: Credentials) -> Self {
        SoapConfig {
            url: url.into(),
            credentials,
            ..SoapConfig::default()
        }
    }

    /// The endpoint URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Replaces the account.
    pub fn credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Forgets every pinned thumbprint.
    pub fn clear_pinned_thumbprints(mut self) -> Self {
        self.pinned.clear();
        self
    }

    /// Sets the deepest XML nesting accepted.
    pub fn max_xml_depth(mut self, n: usize) -> Self {
        self.max_xml_depth = n;
        self
    }

    /// Sets which host this transport speaks for.
    pub fn host(mut self, host: HostSelector) -> Self {
        self.host = host;
        self
    }

    /// Pins a SHA-256 certificate thumbprint (`AB:CD:...`). With a pin, the
    /// certificate is trusted when its thumbprint matches, whoever signed it.
    pub fn pin_thumbprint(mut self, thumbprint: &str) -> Result<Self, Error> {
        self.pinned.push(Thumbprint::parse_for(
            "soap.tls.pinned_thumbprint",
            thumbprint,
        )?);
        Ok(self)
    }

    /// Trusts an extra root certificate (DER).
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(der.into());
        self
    }

    /// Accepts any server certificate. Never in production.
    pub fn dangerous_accept_invalid_certs(mut self, yes: bool) -> Self {
        self.dangerous_accept_invalid_certs = yes;
        self
    }

    /// Allows plain `http://`, which sends the password in clear.
    pub fn dangerous_allow_plain_http(mut self, yes: bool) -> Self {
        self.dangerous_allow_plain_http = yes;
        self
    }

    /// Sets the per-exchange deadline.
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = d;
        self
    }

    /// Sets how long a task may run.
    pub fn task_timeout(mut self, d: Duration) -> Self {
        self.task_timeout = d;
        self
    }

    /// Sets the largest reply accepted.
    pub fn max_reply_bytes(mut self, n: usize) -> Self {
        self.max_reply_bytes = n;
        self
    }

    /// Sets the page size of property retrieval.
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = n.max(1);
        self
    }

    /// Sets how long, after its answer arrived, a datacenter (or cluster)
    /// fetch may serve the other hosts of a shared session
    /// ([`crate::SoapTransport::share`]). Default 3 s: well under a poll
    /// period (the daemon's default is 60 s, 15 s on battery), and long
    /// enough for the poller's later batches (it polls `max_concurrency`
    /// hosts at a time, the next as one finishes) to use the fetch the
    /// first batch made: one fetch per cycle.
    ///
    /// The rule, and why it is safe:
    /// - a fetch serves each host **once**: a host asking again (its next
    ///   poll, or an immediate poll after a power event) always gets a
    ///   fetch sent after it asked, or one still in flight that it had
    ///   not yet been served by;
    /// - other hosts take a kept result only within this window of its
    ///   arrival: data older than one fetch plus the window is never
    ///   served;
    /// - a failed fetch is never kept, and a power call through the
    ///   session drops what is kept and in flight.
    ///
    /// `Duration::ZERO` keeps nothing: hosts then share only fetches that
    /// are in flight when they ask.
    pub fn fetch_reuse(mut self, d: Duration) -> Self {
        self.fetch_reuse = d;
        self
    }

    /// The URL requests are posted to (`/sdk` added when the URL has no
    /// path), or a configuration error (not http(s), no host, or plain
    /// http without [`SoapConfig::dangerous_allow_plain_http`]).
    pub fn sdk_url(&self) -> Result<String, Error> {
        let u = self.url.trim();
        let rest = if let Some(r) = u.strip_prefix("https://") {
            r
        } else if let Some(r) = u.strip_prefix("http://") {
            if !self.dangerous_allow_plain_http {
                return Err(Error::config(
                    "soap.url",
                    format!(
                        "{u} is plain http, which sends the password in clear; use https or set dangerous_allow_plain_http"
                    ),
                ));
            }
            r
        } else {
            return Err(Error::config(
                "soap.url",
                format!("{u:?} is not an http(s) URL"),
            ));
        };
        if rest.is_empty() || rest.starts_with('/') {
            return Err(Error::config("soap.url", format!("{u:?} names no host")));
        }
        if rest.contains('/') {
            Ok(u.to_owned())
        } else {
            Ok(format!("{u}/sdk"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprints_parse_and_print() {
        let s = "89:79:b1:35:05:FC:04:34:BF:7C:0C:1C:64:33:F3:2B:81:37:E5:AB:A3:D4:24:3A:08:0A:19:EB:02:37:0D:72";
        let t = Thumbprint::parse(s).unwrap();
        assert_eq!(t.to_string(), s.to_uppercase());
        let c = SoapConfig::new("https://esx1", Credentials::new("a", "b"));
        assert_eq!(c.clone().pin_thumbprint(s).unwrap().pinned, vec![t]);
        let e = c.pin_thumbprint("AB:CD").unwrap_err();
        assert!(e.to_string().contains("soap.tls.pinned_thumbprint"), "{e}");
    }

    #[test]
    fn urls() {
        let c = SoapConfig::new("https://esx1", Credentials::new("a", "b"));
        assert_eq!(c.sdk_url().unwrap(), "https://esx1/sdk");
        let c = SoapConfig::new("http://127.0.0.1:80/sdk", Credentials::new("a", "b"));
        assert_eq!(
            c.sdk_url().unwrap_err().kind(),
            upsvisor_traits::ErrorKind::Config
        );
        assert_eq!(
            c.dangerous_allow_plain_http(true).sdk_url().unwrap(),
            "http://127.0.0.1:80/sdk"
        );
        assert!(
            SoapConfig::new("ftp://x", Credentials::new("a", "b"))
                .sdk_url()
                .is_err()
        );
    }
}
