//! `estate-tokens`: verify OAuth 2.0 access tokens (JWT, RFC 9068) on every
//! request, for Estate's own authorization server and for any
//! standards-compliant IdP configured by issuer URL.
//!
//! - [`Verifier`]: discovery + JWKS cache, JOSE rules of RFC 8725, typed
//!   claims, a short verified-token cache;
//! - [`Scope`]/[`Scopes`]: the closed scope set;
//! - [`Caller`], [`Scoped`]: axum extractors that answer 401/403 per RFC 6750.
//!
//! Every service re-validates every user token itself (ARCHITECTURE §6): the
//! gateway having checked it proves nothing to the service behind it.

mod claims;
mod extract;
#[cfg(feature = "grpc")]
pub mod grpc;
pub mod jwks;
pub mod readiness;
pub mod revocation;
mod scope;
mod verifier;

pub use claims::{Actor, ClientId, Subject, TokenId, VerifiedToken};
pub use extract::{AuthRejection, Caller, RequiredScope, Scoped, bearer_token, scopes};
pub use jsonwebtoken::Algorithm;
pub use scope::{Scope, Scopes, UnknownScope};
pub use verifier::{ConfigError, MAX_LEEWAY, TokenError, Verifier, VerifierConfig, VerifierSettings};
