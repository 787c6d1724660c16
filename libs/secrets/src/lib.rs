//! `estate-secrets`: secrets from OpenBao / HashiCorp Vault, and from files.
//!
//! - [`OpenBao`]: log in with AppRole or Kubernetes auth, renew and revoke the
//!   token; KV v2 ([`kv`]); dynamic database credentials with leases
//!   ([`database`]); SPIFFE workload certificates from the PKI engine ([`pki`]).
//! - [`resolve`]: turn a configuration [`estate_service_kit::SecretRef`] into
//!   the secret bytes.
//!
//! Why a small client of our own rather than `vaultrs`: see
//! `docs/decisions/0010-openbao-client.md`.

pub mod bootstrap;
mod client;
pub mod database;
pub mod kv;
pub mod pki;
mod resolve;
#[cfg(feature = "test-util")]
pub mod testing;

pub use client::{AuthMethod, OpenBao, OpenBaoError, OpenBaoSettings};
pub use resolve::resolve;
