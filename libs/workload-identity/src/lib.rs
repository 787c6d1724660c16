//! `estate-workload-identity`: who is calling, east-west.
//!
//! - [`SpiffeId`]: strict SPIFFE IDs, read from X.509-SVIDs;
//! - [`tls`]: mTLS server configs that require client SVIDs, and client
//!   configs that verify the server's SPIFFE ID (not a host name);
//! - [`Peer`]: the caller's verified identity as an axum extractor;
//! - [`EastWestPolicy`]: default-deny rules of which workload may call which
//!   route, enforced by a middleware (403 / gRPC `PERMISSION_DENIED`);
//! - [`crl`]: revoked SVIDs refused in both directions (CRLs from OpenBao's PKI).

pub mod crl;
mod identity;
mod peer;
mod policy;
pub mod settings;
mod spiffe;
pub mod tls;

pub use identity::{RotatingIdentity, read_svid_files, spawn_file_reload, spawn_openbao_renewal, svid_from_pem};
pub use peer::{NoPeer, Peer};
pub use policy::{EastWestPolicy, PolicyError, enforce};
pub use settings::{CrlSource, GrpcChannel, IdentityError, IdentitySettings, SvidSource, WorkloadIdentity};
pub use spiffe::{SpiffeId, SpiffeIdError};
