//! What an east-west service needs around it in a test: a real Postgres
//! with the service's schema and roles, a workload CA, a test IdP for
//! tokens, files in a temp dir — and the `database`, `identity` and `tokens`
//! parts of its `[service]` settings, as JSON.

use serde_json::{Value, json};

use crate::{LeafSpec, ServiceRoles, TestIdp, TestPki, TestPostgres, TestkitError};

/// The SPIFFE ID of estate workload `service` in the test trust domain.
pub fn spiffe_id(service: &str) -> String {
    format!("spiffe://estate.local/ns/estate/sa/{service}")
}

/// A service's surroundings (see the module docs).
pub struct ServiceFixture {
    /// The cluster.
    pub pg: TestPostgres,
    /// `<schema>_owner` and `<schema>_app`.
    pub roles: ServiceRoles,
    /// A pool as the owner (migrations, reference data).
    pub owner: sqlx::PgPool,
    /// The workload CA.
    pub pki: TestPki,
    /// The token issuer.
    pub idp: TestIdp,
    /// Files.
    pub dir: tempfile::TempDir,
}

impl ServiceFixture {
    /// Start Postgres, create the roles of `schema`, start an IdP and a CA.
    pub async fn start(schema: &str) -> Result<Self, TestkitError> {
        let pg = TestPostgres::start().await?;
        let roles = pg.create_service_roles(schema).await?;
        let owner = sqlx::PgPool::connect_with(roles.owner.clone()).await?;
        let idp = TestIdp::start().await?;
        let pki = TestPki::new(&format!("{schema}-test"))?;
        let dir = tempfile::tempdir().map_err(TestkitError::io("tempdir"))?;
        Ok(Self { pg, roles, owner, pki, idp, dir })
    }

    fn write(&self, name: &str, contents: &str) -> Result<std::path::PathBuf, TestkitError> {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).map_err(TestkitError::io("write fixture file"))?;
        Ok(path)
    }

    /// `database` (as `<schema>_app`), `identity` (an SVID for `service`,
    /// the CA as bundle, `policy` as the east-west policy) and `tokens`
    /// (the IdP, for `audience`).
    pub fn platform_settings(
        &self,
        schema: &str,
        service: &str,
        audience: &str,
        policy: &str,
    ) -> Result<Value, TestkitError> {
        let d = self.dir.path();
        let svid = self.pki.issue(&LeafSpec::spiffe(&spiffe_id(service)))?.write_to(d, service)?;
        Ok(json!({
            "database": self.pg.database_section(d, &format!("{schema}_app"), &self.roles.app_password)?,
            "identity": {
                "bundle_file": self.write("bundle.pem", &self.pki.ca_pem())?,
                "policy_file": self.write(&format!("{service}-policy.toml"), policy)?,
                "svid": { "source": "files", "cert_file": svid.cert, "key_file": svid.key },
            },
            "tokens": { "issuer": self.idp.issuer(), "audience": audience, "ca_file": self.write("idp-ca.pem", &self.idp.ca_pem())? },
        }))
    }
}
