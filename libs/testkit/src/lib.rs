//! `estate-testkit`: real infrastructure for Estate's tests (CONVENTIONS §13, §16).
//!
//! Everything here is the real thing, started per test on free loopback
//! ports, and stopped by handle when dropped:
//!
//! | type | what runs |
//! |---|---|
//! | [`TestPostgres`] | a throwaway PostgreSQL cluster (`initdb` + `pg_ctl`), TLS-only, password auth |
//! | [`TestOpenBao`] | `bao server -dev` (the real OpenBao binary) with a random root token |
//! | [`TestSiem`] | `rsyslogd -n` receiving RFC 5425 syslog over TLS into a file |
//! | [`TestPki`] | an rcgen CA issuing leaf certificates with SPIFFE URI SANs |
//! | [`TestIdp`] | a standards-shaped third-party IdP (discovery, JWKS, token endpoint) over HTTPS |
//!
//! Nothing in this crate is used by release code paths.

mod error;
mod ports;
mod process;
mod tools;

pub mod binary;
pub mod fixture;
pub mod idp;
pub mod kit;
pub mod login;
pub mod merchant;
pub mod openbao;
pub mod otlp;
pub mod pki;
pub mod postgres;
pub mod psp;
pub mod redis;
pub mod siem;

pub use error::TestkitError;
pub use estate_evidence as evidence;
pub use fixture::{ServiceFixture, spiffe_id};
pub use idp::{IdpClient, IdpKey, TestIdp};
pub use merchant::{MerchantMode, TestMerchant};
pub use openbao::TestOpenBao;
pub use otlp::{ReceivedSpan, TestOtlp};
pub use pki::{Leaf, LeafFiles, LeafSpec, TestPki, Validity};
pub use ports::free_port;
pub use postgres::{ServiceRoles, TestPostgres};
pub use process::process_exists;
pub use psp::{PspMode, TestPsp};
pub use redis::TestRedis;
pub use siem::{ReceivedEvent, SiemAuth, TestSiem};
pub use tools::{bao, postgres_bindir, rsyslogd, schemathesis, workspace_root};

/// How long the testkit waits for a server to become ready before failing.
pub const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
