//! SPIFFE IDs (`spiffe://<trust-domain>/<path>`), parsed strictly per the
//! SPIFFE ID specification, and read from X.509-SVIDs (exactly one URI SAN).

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::CertificateDer;

/// Why something is not a usable SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    /// The string breaks the SPIFFE ID grammar.
    #[error("not a valid SPIFFE ID")]
    Invalid,
    /// The certificate has no URI SAN, several, or an unparseable one.
    #[error("certificate carries no single SPIFFE ID")]
    NotAnSvid,
}

/// A workload identity: `spiffe://estate.local/ns/estate/sa/order`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: String,
    path_start: usize,
}

impl SpiffeId {
    /// The estate's form: `spiffe://<trust_domain>/ns/<namespace>/sa/<service_account>`.
    pub fn workload(trust_domain: &str, namespace: &str, service_account: &str) -> Result<Self, SpiffeIdError> {
        format!("spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}").parse()
    }

    /// The trust domain (`estate.local`).
    pub fn trust_domain(&self) -> &str {
        self.id.get("spiffe://".len()..self.path_start).unwrap_or_default()
    }

    /// The path (`/ns/estate/sa/order`).
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }

    /// The service account of an estate-form ID (`order`).
    pub fn service_account(&self) -> Option<&str> {
        let mut segments = self.path().trim_start_matches('/').split('/');
        match (segments.next(), segments.next(), segments.next(), segments.next(), segments.next()) {
            (Some("ns"), Some(_), Some("sa"), Some(sa), None) => Some(sa),
            _ => None,
        }
    }

    /// The full URI.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The SPIFFE ID of an X.509-SVID: its one and only URI SAN.
    pub fn from_certificate(cert: &CertificateDer<'_>) -> Result<Self, SpiffeIdError> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|_| SpiffeIdError::NotAnSvid)?;
        let san =
            parsed.subject_alternative_name().map_err(|_| SpiffeIdError::NotAnSvid)?.ok_or(SpiffeIdError::NotAnSvid)?;
        let mut uris = san.value.general_names.iter().filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => Some(*uri),
            _ => None,
        });
        let (Some(uri), None) = (uris.next(), uris.next()) else { return Err(SpiffeIdError::NotAnSvid) };
        uri.parse().map_err(|_| SpiffeIdError::NotAnSvid)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    /// SPIFFE ID spec §2: scheme `spiffe`, a trust domain of lowercase
    /// letters, digits, `.`, `-`, `_`; a path of non-empty segments of
    /// letters, digits, `.`, `-`, `_` (no `.` or `..` segments); no port,
    /// user info, query or fragment; at most 2048 bytes.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("spiffe://").ok_or(SpiffeIdError::Invalid)?;
        if s.len() > 2048 {
            return Err(SpiffeIdError::Invalid);
        }
        let (domain, path) = rest.split_once('/').map_or((rest, ""), |(d, p)| (d, p));
        let domain_ok = !domain.is_empty()
            && domain.len() <= 255
            && domain.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
        if !domain_ok {
            return Err(SpiffeIdError::Invalid);
        }
        if path.is_empty() {
            // A trust-domain ID names no workload; Estate never accepts one as a peer.
            return Err(SpiffeIdError::Invalid);
        }
        for segment in path.split('/') {
            let ok = !segment.is_empty()
                && segment != "."
                && segment != ".."
                && segment.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
            if !ok {
                return Err(SpiffeIdError::Invalid);
            }
        }
        Ok(Self { id: s.to_owned(), path_start: "spiffe://".len() + domain.len() })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_estate_form() {
        let id: SpiffeId = "spiffe://estate.local/ns/estate/sa/order".parse().unwrap();
        assert_eq!(id.trust_domain(), "estate.local");
        assert_eq!(id.path(), "/ns/estate/sa/order");
        assert_eq!(id.service_account(), Some("order"));
        assert_eq!(SpiffeId::workload("estate.local", "estate", "order").unwrap(), id);
    }

    #[test]
    fn refuses_everything_the_spec_refuses() {
        for bad in [
            "",
            "spiffe://",
            "spiffe://estate.local",
            "spiffe://estate.local/",
            "https://estate.local/ns/estate/sa/order",
            "SPIFFE://estate.local/ns/x",
            "spiffe://Estate.local/ns/x",
            "spiffe://estate.local:443/ns/x",
            "spiffe://user@estate.local/ns/x",
            "spiffe://estate.local/ns//sa/x",
            "spiffe://estate.local/ns/../sa/x",
            "spiffe://estate.local/ns/./sa/x",
            "spiffe://estate.local/ns/x?y=1",
            "spiffe://estate.local/ns/x#frag",
            "spiffe://estate.local/ns/x/",
            "spiffe://estate.local/ns/ä",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad:?} parsed");
        }
    }
}
