//! A real Redis for tests (the gateway's shared rate-limit budget): a
//! `redis-server` on a free loopback port, TLS only (no plaintext port), a
//! generated password, no persistence; stopped by handle on drop.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::process::ChildGuard;
use crate::{TestPki, TestkitError, ports};

const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// A running Redis.
pub struct TestRedis {
    process: ChildGuard,
    port: u16,
    password: String,
    ca_pem: String,
    dir: tempfile::TempDir,
}

fn redis_server() -> Result<PathBuf, TestkitError> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"].iter().map(PathBuf::from).find(|p| p.is_file()).ok_or(
        TestkitError::Missing {
            program: "redis-server",
            hint: "run `cargo xtask test` (installs it), or `apt-get install redis-server`",
        },
    )
}

impl TestRedis {
    /// Start one.
    pub async fn start() -> Result<Self, TestkitError> {
        let binary = redis_server()?;
        let mut last = None;
        for _ in 0..ports::START_ATTEMPTS {
            match Self::try_start(&binary).await {
                Ok(redis) => return Ok(redis),
                Err(error) => last = Some(error),
            }
        }
        Err(last.unwrap_or_else(|| TestkitError::failed("redis", "no attempt made")))
    }

    async fn try_start(binary: &PathBuf) -> Result<Self, TestkitError> {
        let dir = tempfile::Builder::new().prefix("estate-redis-").tempdir().map_err(TestkitError::io("tempdir"))?;
        let pki = TestPki::new("redis")?;
        let files = pki.localhost_server()?.write_to(dir.path(), "redis")?;
        let port = ports::free_port()?;
        let password = format!("{:032x}", rand::rng().random::<u128>());
        let log_path = dir.path().join("redis.log");
        let conf = format!(
            "bind 127.0.0.1\nport 0\ntls-port {port}\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
             tls-auth-clients no\nrequirepass {password}\nsave \"\"\nappendonly no\ndir {dir}\nlogfile {log}\n\
             daemonize no\nprotected-mode yes\n",
            cert = files.cert.display(),
            key = files.key.display(),
            ca = files.ca.display(),
            dir = dir.path().display(),
            log = log_path.display(),
        );
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf).map_err(TestkitError::io("write redis.conf"))?;
        std::fs::set_permissions(&conf_path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(TestkitError::io("chmod redis.conf"))?;
        File::create(&log_path).map_err(TestkitError::io("create redis.log"))?;
        let child = Command::new(binary)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(TestkitError::io(format!("spawn {}", binary.display())))?;
        let mut process = ChildGuard::new(child);
        // Ready when it says so in its log (and still running).
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = process.try_wait() {
                return Err(TestkitError::failed(
                    "redis-server",
                    format!("exited early ({status}); see {}", log_path.display()),
                ));
            }
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("Ready to accept connections") {
                break;
            }
            if Instant::now() > deadline {
                return Err(TestkitError::NotReady { what: "Redis", seconds: READY_TIMEOUT.as_secs(), log: log_path });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { process, port, password, ca_pem: pki.ca_pem(), dir })
    }

    /// `127.0.0.1:<port>` (TLS).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its password.
    pub fn password(&self) -> &str {
        &self.password
    }

    /// The CA of its certificate (for `localhost`), PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The PID.
    pub fn pid(&self) -> Option<u32> {
        self.process.pid()
    }

    /// Its folder (config, log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}
