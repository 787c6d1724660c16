//! `estate-oauth-client`: the client side of OAuth for service-to-service calls.
//!
//! - [`OAuthClient`]: a token endpoint client with `private_key_jwt` or
//!   `client_secret_basic` authentication and strict response validation;
//! - [`ClientCredentialsSource`]: FLOW-CC tokens, cached, refreshed
//!   proactively and single-flight, with backoff;
//! - [`OAuthClient::exchange`]: FLOW-TX, RFC 8693 token exchange;
//! - [`RelayedToken`]: FLOW-RELAY, the caller's own token forwarded;
//! - [`authorized`] / [`BearerLayer`]: put the right token on reqwest and
//!   tonic calls automatically.

mod client;
mod outbound;
mod source;

pub use client::{ACCESS_TOKEN_TYPE, ClientAuth, IssuedToken, OAuthClient, OAuthError, TOKEN_EXCHANGE_GRANT};
pub use outbound::{Bearer, BearerLayer, BoxError, authorized};
pub use source::{ClientCredentialsSource, RelayedToken, TokenSource};
