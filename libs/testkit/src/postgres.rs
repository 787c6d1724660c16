//! A throwaway PostgreSQL for one test.
//!
//! Where it comes from, in order:
//! 1. `DATABASE_URL` is set: a fresh database on that server, dropped afterwards
//!    (roles are server-wide there, so tests that create roles may collide);
//! 2. PostgreSQL server binaries are installed: a new cluster (`initdb` +
//!    `pg_ctl`) in a temp dir, run as the unprivileged `postgres` OS user when
//!    this process is root, listening on a free loopback port, **TLS only**
//!    (`hostssl` in `pg_hba.conf`, certificate from a [`TestPki`]) with
//!    SCRAM passwords;
//! 3. with the `docker` feature and a Docker engine: a testcontainers Postgres.
//!
//! The cluster is stopped with `pg_ctl stop -m immediate` on its own data
//! directory when the value is dropped: by handle, never by process name.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rand::Rng;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{ConnectOptions, Connection, PgPool};
use tempfile::TempDir;

use crate::{TestPki, TestkitError, ports, tools};

/// The superuser of a local test cluster.
const SUPERUSER: &str = "postgres";

/// The deployment's per-service roles bootstrap, run by [`TestPostgres::create_service_roles`].
const SERVICE_ROLES_SQL: &str = include_str!("../../../infra/postgres/service-roles.sql");

/// The role OpenBao's database engine uses, run by [`TestPostgres::create_openbao_role`].
const OPENBAO_ROLE_SQL: &str = include_str!("../../../infra/postgres/openbao-role.sql");

/// The two roles of one service and how to connect as each.
pub struct ServiceRoles {
    /// `<svc>_owner`: migrations.
    pub owner: PgConnectOptions,
    /// `<svc>_app`: the service at runtime.
    pub app: PgConnectOptions,
    /// The owner's generated password.
    pub owner_password: String,
    /// The app role's generated password.
    pub app_password: String,
}

/// A throwaway PostgreSQL; stopped (or its database dropped) when dropped.
pub struct TestPostgres {
    options: PgConnectOptions,
    backend: Backend,
}

enum Backend {
    Local(LocalCluster),
    External {
        admin: Box<PgConnectOptions>,
        database: String,
    },
    #[cfg(feature = "docker")]
    // Held for its Drop, which removes the container.
    Container {
        _container: Box<testcontainers::ContainerAsync<testcontainers_modules::postgres::Postgres>>,
    },
}

struct LocalCluster {
    dir: TempDir,
    bindir: PathBuf,
    port: u16,
    ca_pem: String,
    as_postgres_user: bool,
}

impl TestPostgres {
    /// Start (or attach to) a PostgreSQL as described in the module docs.
    pub async fn start() -> Result<Self, TestkitError> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Self::external(&url).await;
        }
        if let Some(bindir) = tools::postgres_bindir() {
            return Self::local(bindir).await;
        }
        #[cfg(feature = "docker")]
        {
            Self::container().await
        }
        #[cfg(not(feature = "docker"))]
        Err(TestkitError::Missing {
            program: "PostgreSQL server (initdb, pg_ctl)",
            hint: "run `cargo xtask test` (installs it), or `apt-get install postgresql`, or set DATABASE_URL, \
                   or enable estate-testkit's `docker` feature where Docker runs",
        })
    }

    /// Connect options for the superuser (TLS, verified, when local).
    pub fn admin_options(&self) -> PgConnectOptions {
        self.options.clone()
    }

    /// Connect options for another role on the same server and database.
    pub fn options_for(&self, user: &str, password: &str) -> PgConnectOptions {
        self.options.clone().username(user).password(password)
    }

    /// A small pool of superuser connections.
    pub async fn admin_pool(&self) -> Result<PgPool, TestkitError> {
        Ok(PgPoolOptions::new().max_connections(4).connect_with(self.admin_options()).await?)
    }

    /// Create `<svc>_owner`, `<svc>_app` and schema `<svc>` by running
    /// `infra/postgres/service-roles.sql` (the same file deployments use),
    /// with generated passwords.
    pub async fn create_service_roles(&self, svc: &str) -> Result<ServiceRoles, TestkitError> {
        if svc.is_empty() || !svc.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(TestkitError::failed("service roles", "service name must be [a-z_]+"));
        }
        let owner_password = format!("{:032x}", rand::rng().random::<u128>());
        let app_password = format!("{:032x}", rand::rng().random::<u128>());
        // psql-style variables, substituted here; the values are generated hex and a checked name.
        let sql = SERVICE_ROLES_SQL
            .replace(":'owner_password'", &format!("'{owner_password}'"))
            .replace(":'app_password'", &format!("'{app_password}'"))
            .replace(":svc_owner", &format!("{svc}_owner"))
            .replace(":svc_app", &format!("{svc}_app"))
            .replace(":svc", svc);
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
        conn.close().await?;
        Ok(ServiceRoles {
            owner: self.options_for(&format!("{svc}_owner"), &owner_password),
            app: self.options_for(&format!("{svc}_app"), &app_password),
            owner_password,
            app_password,
        })
    }

    /// Create the `openbao_admin` role (`infra/postgres/openbao-role.sql`)
    /// that OpenBao's database engine logs in as; returns its password.
    pub async fn create_openbao_role(&self) -> Result<String, TestkitError> {
        let password = format!("{:032x}", rand::rng().random::<u128>());
        let sql = OPENBAO_ROLE_SQL.replace(":'openbao_password'", &format!("'{password}'"));
        let mut conn = sqlx::PgConnection::connect_with(&self.options).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await?;
        conn.close().await?;
        Ok(password)
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.options.get_port()
    }

    /// A `[service.database]` section (as JSON) that logs in as `user` with
    /// `password` over verified TLS: the password goes to `dir/<user>.password`
    /// (0400), the server's CA to `dir/db-ca.pem`. Local clusters only.
    pub fn database_section(&self, dir: &Path, user: &str, password: &str) -> Result<serde_json::Value, TestkitError> {
        use std::os::unix::fs::PermissionsExt;
        let ca = self.ca_pem().ok_or_else(|| TestkitError::failed("database section", "needs a local cluster"))?;
        let ca_file = dir.join("db-ca.pem");
        std::fs::write(&ca_file, ca).map_err(TestkitError::io("write db CA"))?;
        let password_file = dir.join(format!("{user}.password"));
        std::fs::write(&password_file, password).map_err(TestkitError::io("write db password"))?;
        std::fs::set_permissions(&password_file, std::fs::Permissions::from_mode(0o400))
            .map_err(TestkitError::io("chmod db password"))?;
        Ok(serde_json::json!({
            "host": "127.0.0.1",
            "port": self.port(),
            "name": self.options.get_database().unwrap_or("postgres"),
            "login": { "source": "password", "user": user, "password": format!("file:{}", password_file.display()) },
            "ca_file": ca_file,
            "max_connections": 8,
        }))
    }

    /// The CA that signed the server certificate (local clusters only).
    pub fn ca_pem(&self) -> Option<&str> {
        match &self.backend {
            Backend::Local(local) => Some(&local.ca_pem),
            _ => None,
        }
    }

    /// The postmaster's PID (local clusters only), from `postmaster.pid`.
    pub fn postmaster_pid(&self) -> Option<u32> {
        match &self.backend {
            Backend::Local(local) => std::fs::read_to_string(local.data_dir().join("postmaster.pid"))
                .ok()?
                .lines()
                .next()?
                .trim()
                .parse()
                .ok(),
            _ => None,
        }
    }

    async fn local(bindir: PathBuf) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new().prefix("estate-pg-").tempdir().map_err(TestkitError::io("tempdir"))?;
        let as_postgres_user = nix::unistd::geteuid().is_root();
        let mut cluster = LocalCluster { dir, bindir, port: 0, ca_pem: String::new(), as_postgres_user };
        let password = format!("{:032x}", rand::rng().random::<u128>());
        cluster.init(&password)?;

        let mut last_error = None;
        for _ in 0..ports::START_ATTEMPTS {
            cluster.port = ports::free_port()?;
            match cluster.start() {
                Ok(()) => {
                    last_error = None;
                    break;
                }
                // Most likely someone took the port between our check and the start.
                Err(error) => last_error = Some(error),
            }
        }
        if let Some(error) = last_error {
            return Err(error);
        }
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(cluster.port)
            .username(SUPERUSER)
            .password(&password)
            .database("postgres")
            .ssl_mode(PgSslMode::VerifyFull)
            .ssl_root_cert_from_pem(cluster.ca_pem.clone().into_bytes())
            .disable_statement_logging();
        Ok(Self { options, backend: Backend::Local(cluster) })
    }

    async fn external(url: &str) -> Result<Self, TestkitError> {
        let admin: PgConnectOptions = url.parse()?;
        let database = format!("estate_test_{:016x}", rand::rng().random::<u64>());
        let mut conn = sqlx::PgConnection::connect_with(&admin).await?;
        // The name is generated hex above, never input: safe to splice.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}"))).execute(&mut conn).await?;
        conn.close().await?;
        let options = admin.clone().database(&database);
        Ok(Self { options, backend: Backend::External { admin: Box::new(admin), database } })
    }

    #[cfg(feature = "docker")]
    async fn container() -> Result<Self, TestkitError> {
        use testcontainers::runners::AsyncRunner;
        let container = testcontainers_modules::postgres::Postgres::default()
            .start()
            .await
            .map_err(|e| TestkitError::failed("start Postgres container", e.to_string()))?;
        let port = container
            .get_host_port_ipv4(5432)
            .await
            .map_err(|e| TestkitError::failed("container port", e.to_string()))?;
        let options = PgConnectOptions::new()
            .host("127.0.0.1")
            .port(port)
            .username("postgres")
            .password("postgres")
            .database("postgres");
        Ok(Self { options, backend: Backend::Container { _container: Box::new(container) } })
    }
}

impl LocalCluster {
    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Run a PostgreSQL program, as the `postgres` OS user when we are root
    /// (the server refuses to run as root).
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, TestkitError> {
        let exe = self.bindir.join(program);
        let mut command = if self.as_postgres_user {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&exe);
            c
        } else {
            Command::new(&exe)
        };
        let output = command.args(args).output().map_err(TestkitError::io(format!("run {}", exe.display())))?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(TestkitError::failed(
                program,
                format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)),
            ))
        }
    }

    fn write_owned(&self, path: &Path, contents: &[u8], mode: u32) -> Result<(), TestkitError> {
        use std::os::unix::fs::PermissionsExt;
        std::fs::write(path, contents).map_err(TestkitError::io(format!("write {}", path.display())))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(TestkitError::io("chmod"))?;
        self.give_to_postgres(path)
    }

    fn give_to_postgres(&self, path: &Path) -> Result<(), TestkitError> {
        if !self.as_postgres_user {
            return Ok(());
        }
        let user = nix::unistd::User::from_name("postgres")
            .map_err(|e| TestkitError::failed("look up user postgres", e.to_string()))?
            .ok_or(TestkitError::Missing {
                program: "OS user `postgres`",
                hint: "installing the Debian postgresql package creates it",
            })?;
        nix::unistd::chown(path, Some(user.uid), Some(user.gid))
            .map_err(|e| TestkitError::failed(format!("chown {}", path.display()), e.to_string()))
    }

    fn init(&mut self, password: &str) -> Result<(), TestkitError> {
        let root = self.dir.path().to_path_buf();
        self.give_to_postgres(&root)?;
        let pwfile = root.join("pwfile");
        self.write_owned(&pwfile, password.as_bytes(), 0o600)?;
        let data = self.data_dir();
        let data_arg = data.display().to_string();
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let initdb_args = [
            "-D",
            &data_arg,
            "-U",
            SUPERUSER,
            &pwfile_arg,
            "--auth-local=peer",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-locale",
            "--no-sync",
            "--no-instructions",
        ];
        self.run("initdb", &initdb_args)?;
        std::fs::remove_file(&pwfile).map_err(TestkitError::io("remove pwfile"))?;

        // TLS only: no plain `host` line, so an unencrypted TCP login is refused.
        let hba = "local all postgres peer\nhostssl all all 127.0.0.1/32 scram-sha-256\n";
        self.write_owned(&data.join("pg_hba.conf"), hba.as_bytes(), 0o600)?;

        let pki = TestPki::new("postgres")?;
        let leaf = pki.localhost_server()?;
        self.write_owned(&root.join("server.crt"), leaf.cert_pem().as_bytes(), 0o644)?;
        self.write_owned(&root.join("server.key"), leaf.key_pem().as_bytes(), 0o600)?;
        self.ca_pem = pki.ca_pem();
        Ok(())
    }

    fn start(&self) -> Result<(), TestkitError> {
        let root = self.dir.path();
        let server_options = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c ssl=on -c ssl_cert_file={dir}/server.crt -c ssl_key_file={dir}/server.key \
             -c ssl_min_protocol_version=TLSv1.2 -c password_encryption=scram-sha-256",
            port = self.port,
            dir = root.display(),
        );
        let data = self.data_dir().display().to_string();
        let log = root.join("postgres.log").display().to_string();
        self.run("pg_ctl", &["-D", &data, "-l", &log, "-w", "-t", "30", "-o", &server_options, "start"])
            .map_err(|e| TestkitError::failed("pg_ctl start", format!("{e}; log: {log}")))?;
        Ok(())
    }

    fn stop(&self) {
        let data = self.data_dir().display().to_string();
        if let Err(error) = self.run("pg_ctl", &["-D", &data, "-m", "immediate", "-w", "stop"]) {
            tracing::warn!(%error, "stopping test cluster failed");
        }
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        match &self.backend {
            Backend::Local(cluster) => cluster.stop(),
            Backend::External { admin, database } => {
                // Dropping happens outside any runtime guarantee; use a private one.
                let admin = (**admin).clone();
                let sql = format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)");
                let _ = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                    runtime.block_on(async {
                        let mut conn = sqlx::PgConnection::connect_with(&admin).await.ok()?;
                        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut conn).await.ok()
                    })
                })
                .join();
            }
            #[cfg(feature = "docker")]
            Backend::Container { .. } => {}
        }
    }
}
