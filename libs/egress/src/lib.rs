//! `estate-egress`: the one outbound HTTP client for URLs the estate does not
//! control (merchant webhooks, partner APIs). OWASP API7 (SSRF):
//!
//! - `https` only (`http` only with [`EgressConfig::allow_http`], for
//!   development); no credentials in the URL;
//! - resolve, vet, then connect to exactly the vetted addresses: the
//!   resolver *is* the check, so a name cannot resolve to a public address
//!   for the check and to `127.0.0.1` for the connection (DNS rebinding);
//!   IP-literal URLs are vetted before any connection; a name with any
//!   refused address is refused as a whole;
//! - refused: loopback, private (RFC 1918), CGNAT, link-local (incl. the
//!   cloud metadata address 169.254.169.254), unique-local and every other
//!   special-purpose block, also when wrapped in IPv6 ([`address`]);
//! - no redirects (a 3xx is an error, never followed), no proxies from the
//!   environment, connect and overall timeouts, a response size cap.

pub mod address;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Why an outbound call was refused or failed. Messages carry classes and
/// the host at most, never a response body.
#[derive(Debug, thiserror::Error)]
pub enum EgressError {
    /// Not a URL, or one with credentials/without a host.
    #[error("refused URL: {0}")]
    Url(&'static str),
    /// A scheme other than https (or http in development).
    #[error("refused scheme: only https is allowed")]
    Scheme,
    /// The destination is not a public unicast address.
    #[error("refused destination: {class} address")]
    Destination {
        /// The address class (`loopback`, `private`, `link_local_metadata` …).
        class: &'static str,
    },
    /// The name did not resolve.
    #[error("the destination host does not resolve")]
    Unresolvable,
    /// The server answered with a redirect, which is never followed.
    #[error("refused redirect (status {0})")]
    Redirect(u16),
    /// The response was larger than the cap.
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
    /// Connect or overall timeout.
    #[error("timed out")]
    Timeout,
    /// Anything else on the way (TLS, connection reset …).
    #[error("outbound call failed: {0}")]
    Transport(String),
}

/// How the client behaves.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// Allow `http://` (development only).
    pub allow_http: bool,
    /// TCP + TLS connect timeout.
    pub connect_timeout: Duration,
    /// Whole-call timeout (connect, request, response).
    pub timeout: Duration,
    /// Largest response body read.
    pub max_response_bytes: usize,
    /// Addresses exempt from the destination check — for a partner simulator
    /// in development and tests. Empty in production.
    pub exempt: Vec<IpAddr>,
    /// Trust only these CA certificates (PEM) instead of the platform's —
    /// for tests against a test CA.
    pub ca_pem: Option<String>,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            allow_http: false,
            connect_timeout: Duration::from_secs(3),
            timeout: Duration::from_secs(10),
            max_response_bytes: 64 * 1024,
            exempt: Vec::new(),
            ca_pem: None,
        }
    }
}

/// A vetted response.
#[derive(Debug, Clone)]
pub struct EgressResponse {
    /// HTTP status (never 3xx).
    pub status: u16,
    /// The body, at most `max_response_bytes`.
    pub body: Vec<u8>,
}

/// The resolver that refuses non-public answers.
#[derive(Debug)]
struct VettingResolver {
    exempt: Arc<Vec<IpAddr>>,
}

/// The error a refused resolution carries through reqwest.
#[derive(Debug, thiserror::Error)]
#[error("refused destination: {0}")]
struct Refused(&'static str);

fn vet(ip: IpAddr, exempt: &[IpAddr]) -> Result<(), &'static str> {
    match address::refused_class(ip) {
        Some(class) if !exempt.contains(&ip) => Err(class),
        _ => Ok(()),
    }
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let exempt = self.exempt.clone();
        let host = name.as_str().to_owned();
        Box::pin(async move {
            // Boxed as the trait object itself, so `classify` can downcast it.
            let refuse = |class| -> Box<dyn std::error::Error + Send + Sync> { Box::new(Refused(class)) };
            let addrs: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(addrs) => addrs.collect(),
                Err(_) => return Err(refuse("unresolvable")),
            };
            if addrs.is_empty() {
                return Err(refuse("unresolvable"));
            }
            for addr in &addrs {
                vet(addr.ip(), &exempt).map_err(refuse)?;
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// The SSRF-safe client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EgressClient {
    http: reqwest::Client,
    config: Arc<EgressConfig>,
}

impl EgressClient {
    /// A client with `config`.
    pub fn new(config: EgressConfig) -> Result<Self, EgressError> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .https_only(!config.allow_http)
            .dns_resolver(Arc::new(VettingResolver { exempt: Arc::new(config.exempt.clone()) }));
        if let Some(pem) = &config.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| EgressError::Transport(format!("CA bundle: {e}")))?;
            builder = builder.tls_certs_only(certs);
        }
        let http = builder.build().map_err(|e| EgressError::Transport(e.to_string()))?;
        Ok(Self { http, config: Arc::new(config) })
    }

    /// Vet `url` without calling it.
    pub fn check_url(&self, url: &str) -> Result<reqwest::Url, EgressError> {
        let url = reqwest::Url::parse(url).map_err(|_| EgressError::Url("not an absolute URL"))?;
        match url.scheme() {
            "https" => {}
            "http" if self.config.allow_http => {}
            _ => return Err(EgressError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(EgressError::Url("credentials in the URL"));
        }
        // IP literals never reach the resolver: vet them here.
        // (The URL parser already normalised `0x7f.1`, `2130706433` … to dotted form.)
        let host = url.host_str().ok_or(EgressError::Url("no host"))?;
        let literal = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().ok();
        if let Some(ip) = literal {
            vet(ip, &self.config.exempt).map_err(|class| EgressError::Destination { class })?;
        }
        Ok(url)
    }

    /// Vet `url` and what its host resolves to now — for feedback when a URL
    /// is registered. Not a substitute for the check at call time (a name
    /// can resolve elsewhere later): every call resolves and vets again.
    pub async fn vet_url(&self, url: &str) -> Result<reqwest::Url, EgressError> {
        let url = self.check_url(url)?;
        let host = url.host_str().ok_or(EgressError::Url("no host"))?;
        if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
            return Ok(url);
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, url.port_or_known_default().unwrap_or(443)))
            .await
            .map_err(|_| EgressError::Unresolvable)?
            .collect();
        if addrs.is_empty() {
            return Err(EgressError::Unresolvable);
        }
        for addr in addrs {
            vet(addr.ip(), &self.config.exempt).map_err(|class| EgressError::Destination { class })?;
        }
        Ok(url)
    }

    /// `POST` `body` as JSON to `url`.
    pub async fn post_json(&self, url: &str, body: &impl serde::Serialize) -> Result<EgressResponse, EgressError> {
        let url = self.check_url(url)?;
        let body = serde_json::to_vec(body).map_err(|e| EgressError::Transport(e.to_string()))?;
        self.send(self.http.post(url).header("content-type", "application/json").body(body)).await
    }

    /// `GET` `url`.
    pub async fn get(&self, url: &str) -> Result<EgressResponse, EgressError> {
        let url = self.check_url(url)?;
        self.send(self.http.get(url)).await
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<EgressResponse, EgressError> {
        let mut response = request.send().await.map_err(classify)?;
        let status = response.status();
        if status.is_redirection() {
            return Err(EgressError::Redirect(status.as_u16()));
        }
        let cap = self.config.max_response_bytes;
        if response.content_length().is_some_and(|len| len > cap as u64) {
            return Err(EgressError::TooLarge(cap));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(classify)? {
            if body.len() + chunk.len() > cap {
                return Err(EgressError::TooLarge(cap));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(EgressResponse { status: status.as_u16(), body })
    }
}

/// Turn a reqwest error into a clear class (the refusal travels in its sources).
fn classify(error: reqwest::Error) -> EgressError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = source {
        if let Some(Refused(class)) = e.downcast_ref::<Refused>() {
            return if *class == "unresolvable" {
                EgressError::Unresolvable
            } else {
                EgressError::Destination { class }
            };
        }
        source = e.source();
    }
    if error.is_timeout() { EgressError::Timeout } else { EgressError::Transport(error.without_url().to_string()) }
}
