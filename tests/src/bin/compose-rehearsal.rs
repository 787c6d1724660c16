//! `compose-rehearsal PLAN.json`: runs the resolved compose file
//! (`docker compose config --format json` of `infra/compose/compose.yaml`)
//! without a container runtime — each compose service as a process in its
//! own network and mount namespace, the way a container runtime would start
//! it (decision 0026). Started by [`estate_tests::rehearsal`] inside
//! `unshare --user --map-user=1000 --keep-caps --mount --net`, so everything
//! it creates (bridges, veths, mounts) lives in namespaces that vanish with it.
//!
//! What each "container" gets, read from the compose file:
//! - one network namespace per container with one veth per compose network it
//!   joins (a bridge per network, internal networks have no way out: there is
//!   none), an `/etc/hosts` naming every service and alias it can reach, and
//!   unprivileged ports from 0 (as Docker sets `ip_unprivileged_port_start`);
//! - a root of its own: the host's `/usr` read-only (the programs: the
//!   estate's binaries at the image's paths, the host's postgres, rsyslogd and
//!   OpenBao's `bao` for the third-party images), the compose volumes (named
//!   volumes as directories, `subpath`, bind mounts, `read_only`), its tmpfs
//!   mounts, and a read-only root when compose says `read_only: true`;
//! - the entrypoint and command compose resolves (the image's when compose
//!   sets none), its environment, no capabilities, `no-new-privileges`; it
//!   is killed if this runner dies (`--pdeathsig`), so nothing outlives a test.
//!
//! Dependencies start in compose's order and conditions
//! (`service_started`, `service_healthy` by the healthcheck run inside the
//! container, `service_completed_successfully`). Published ports are served
//! as Unix sockets in the work directory (the test forwards TCP to them).
//!
//! `up` is `docker compose up --wait`: it is reported once every service with
//! a healthcheck passes it.
//!
//! stdout is the protocol with the test: `started <service>`, `completed
//! <one-shot> <code>`, `healthy <service>`, `up`, `exited <service> <code>`,
//! `failed <why>`. Closing stdin stops everything (the image's stop signal,
//! then SIGKILL).
#![allow(clippy::print_stdout, clippy::print_stderr, reason = "the test reads this tool's stdout")]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{PermissionsExt as _, symlink};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use estate_tests::rehearsal::{Image, Plan};
use serde_json::Value;

/// Containers are started in their own user namespace as this uid (postgres
/// refuses to run as root); compose's `user:` cannot be honoured with one
/// mapped uid (decision 0026).
const UID: u32 = 1000;
/// How long a stopped container gets before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

fn main() -> ExitCode {
    let Some(plan_path) = std::env::args().nth(1) else {
        eprintln!("usage: compose-rehearsal PLAN.json");
        return ExitCode::from(2);
    };
    let plan: Plan = match std::fs::read(&plan_path)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|e| e.to_string()))
    {
        Ok(plan) => plan,
        Err(error) => {
            println!("failed reading {plan_path}: {error}");
            return ExitCode::FAILURE;
        }
    };
    let mut estate = Rehearsal::new(plan);
    let outcome = estate.run();
    estate.stop();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            println!("failed {error}");
            ExitCode::FAILURE
        }
    }
}

type Result<T> = std::result::Result<T, String>;

fn sh(program: &str, args: &[&str]) -> Result<()> {
    let output = Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {}", args.join(" "), String::from_utf8_lossy(&output.stderr).trim()))
    }
}

struct Container {
    name: String,
    child: Child,
    exited: Option<i32>,
    one_shot: bool,
    /// The environment it runs with (its healthcheck gets it too).
    env: BTreeMap<String, String>,
}

struct Rehearsal {
    plan: Plan,
    services: BTreeMap<String, Value>,
    /// Network name → its index (bridge `br<i>`, subnet 10.89.<i>.0/24).
    networks: BTreeMap<String, usize>,
    running: Vec<Container>,
    /// Named volumes no container has mounted yet.
    fresh_volumes: BTreeSet<String>,
}

impl Rehearsal {
    fn new(plan: Plan) -> Self {
        let services = plan.compose["services"].as_object().cloned().unwrap_or_default().into_iter().collect();
        let networks = plan.compose["networks"]
            .as_object()
            .map(|n| n.keys().cloned().enumerate().map(|(i, name)| (name, i)).collect())
            .unwrap_or_default();
        let fresh_volumes =
            plan.compose["volumes"].as_object().map(|v| v.keys().cloned().collect()).unwrap_or_default();
        Self { plan, services, networks, running: Vec::new(), fresh_volumes }
    }

    /// The service's index (its host part in every subnet).
    fn index(&self, service: &str) -> usize {
        self.services.keys().position(|s| s == service).unwrap_or(0)
    }

    fn service_networks(&self, service: &str) -> Vec<String> {
        let svc = &self.services[service];
        if svc["network_mode"].as_str() == Some("none") {
            return Vec::new();
        }
        match svc["networks"].as_object() {
            Some(networks) => networks.keys().cloned().collect(),
            None => vec!["default".into()],
        }
    }

    fn address(&self, service: &str, network: &str) -> String {
        format!("10.89.{}.{}", self.networks.get(network).copied().unwrap_or(0), self.index(service) + 2)
    }

    fn run(&mut self) -> Result<()> {
        sh("ip", &["link", "set", "lo", "up"])?;
        for i in self.networks.values() {
            let bridge = format!("br{i}");
            sh("ip", &["link", "add", &bridge, "type", "bridge"])?;
            sh("ip", &["addr", "add", &format!("10.89.{i}.1/24"), "dev", &bridge])?;
            sh("ip", &["link", "set", &bridge, "up"])?;
        }
        for volume in &self.fresh_volumes {
            std::fs::create_dir_all(self.plan.work.join("volumes").join(volume)).map_err(|e| e.to_string())?;
        }
        self.publish()?;
        let mut started: BTreeSet<String> = BTreeSet::new();
        let mut healthy: BTreeSet<String> = BTreeSet::new();
        let deadline = Instant::now()
            + Duration::from_secs(if std::env::var_os("COMPOSE_REHEARSAL_QUICK").is_some() { 20 } else { 180 });
        while started.len() < self.services.len() {
            if Instant::now() > deadline {
                return Err(format!("not everything started within 180 s; started: {started:?}"));
            }
            self.reap();
            let mut progressed = false;
            let names: Vec<String> = self.services.keys().cloned().collect();
            for name in names {
                if started.contains(&name) {
                    continue;
                }
                if self.ready_to_start(&name, &started, &mut healthy)? {
                    self.start(&name)?;
                    started.insert(name);
                    progressed = true;
                }
            }
            if !progressed {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // `up --wait`: every long-running container with a healthcheck is healthy.
        let waiting: Vec<String> = self
            .running
            .iter()
            .filter(|c| !c.one_shot && !self.services[&c.name]["healthcheck"]["test"].is_null())
            .map(|c| c.name.clone())
            .collect();
        for name in waiting {
            while !healthy.contains(&name) {
                self.reap();
                if let Some(code) = self.running.iter().find(|c| c.name == name).and_then(|c| c.exited) {
                    return Err(format!("{name} exited {code} before healthy\n{}", self.log_tail(&name)));
                }
                if Instant::now() > deadline {
                    let probe = std::fs::read_to_string(self.plan.work.join("logs").join(format!("{name}.health")));
                    return Err(format!(
                        "{name} not healthy within 180 s; its healthcheck said: {}\n{}",
                        probe.unwrap_or_default(),
                        self.log_tail(&name)
                    ));
                }
                if self.healthcheck(&name)? {
                    println!("healthy {name}");
                    healthy.insert(name.clone());
                } else {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
        }
        println!("up");
        // Until the test closes stdin: report containers that end.
        let (eof_tx, eof_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = eof_tx.send(());
        });
        while eof_rx.recv_timeout(Duration::from_millis(100)).is_err() {
            self.reap();
        }
        Ok(())
    }

    /// Record containers that ended; say so for the ones that should not have.
    fn reap(&mut self) {
        for container in &mut self.running {
            if container.exited.is_none()
                && let Ok(Some(status)) = container.child.try_wait()
            {
                let code = status.code().unwrap_or(-1);
                container.exited = Some(code);
                let verb = if container.one_shot { "completed" } else { "exited" };
                println!("{verb} {} {code}", container.name);
            }
        }
    }

    fn ready_to_start(&self, name: &str, started: &BTreeSet<String>, healthy: &mut BTreeSet<String>) -> Result<bool> {
        let Some(depends) = self.services[name]["depends_on"].as_object() else { return Ok(true) };
        for (dependency, how) in depends {
            if !started.contains(dependency) {
                return Ok(false);
            }
            let container = self.running.iter().find(|c| &c.name == dependency);
            match how["condition"].as_str().unwrap_or("service_started") {
                "service_completed_successfully" => match container.and_then(|c| c.exited) {
                    None => return Ok(false),
                    Some(0) => {}
                    Some(code) => {
                        return Err(format!(
                            "{dependency} exited {code}; {name} needs it to succeed\n{}",
                            self.log_tail(dependency)
                        ));
                    }
                },
                "service_healthy" if !healthy.contains(dependency) => {
                    if let Some(code) = container.and_then(|c| c.exited) {
                        return Err(format!(
                            "{dependency} exited {code} before healthy\n{}",
                            self.log_tail(dependency)
                        ));
                    }
                    if !self.healthcheck(dependency)? {
                        return Ok(false);
                    }
                    healthy.insert(dependency.clone());
                }
                _ => {}
            }
        }
        Ok(true)
    }

    fn log_tail(&self, service: &str) -> String {
        let log =
            std::fs::read_to_string(self.plan.work.join("logs").join(format!("{service}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Compose's healthcheck, run inside the container's namespaces and root.
    fn healthcheck(&self, service: &str) -> Result<bool> {
        let test: Vec<String> = self.services[service]["healthcheck"]["test"]
            .as_array()
            .map(|t| t.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        let argv: Vec<String> = match test.first().map(String::as_str) {
            Some("CMD") => test[1..].to_vec(),
            Some("CMD-SHELL") => vec!["/bin/sh".into(), "-c".into(), test[1..].join(" ")],
            _ => return Ok(true),
        };
        let Some(container) = self.running.iter().find(|c| c.name == service) else { return Ok(false) };
        let pid = container.child.id().to_string();
        let status = Command::new("nsenter")
            .args(["-t", &pid, "-n", "-m", "-r", "-w", "--"])
            .args(&argv)
            .env_clear()
            .envs(&container.env)
            .stdout(Stdio::null())
            .stderr(self.health_log(service)?)
            .status()
            .map_err(|e| format!("nsenter: {e}"))?;
        Ok(status.success())
    }

    /// Where the last healthcheck's output goes.
    fn health_log(&self, service: &str) -> Result<std::fs::File> {
        std::fs::File::create(self.plan.work.join("logs").join(format!("{service}.health"))).map_err(|e| e.to_string())
    }

    fn image(&self, service: &str) -> Image {
        Image::of(&self.services[service])
    }

    /// Published ports: a Unix socket per port in `work/published/`, forwarded
    /// to the service's first network address.
    fn publish(&self) -> Result<()> {
        let dir = self.plan.work.join("published");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for (name, svc) in &self.services {
            for port in svc["ports"].as_array().into_iter().flatten() {
                let (Some(published), Some(target)) = (port["published"].as_str(), port["target"].as_u64()) else {
                    continue;
                };
                let Some(network) = self.service_networks(name).into_iter().next() else { continue };
                let to = format!("{}:{target}", self.address(name, &network));
                let listener = UnixListener::bind(dir.join(format!("{published}.sock"))).map_err(|e| e.to_string())?;
                std::thread::spawn(move || {
                    for stream in listener.incoming().flatten() {
                        let to = to.clone();
                        std::thread::spawn(move || {
                            if let Ok(upstream) = std::net::TcpStream::connect(&to) {
                                splice(stream, upstream);
                            }
                        });
                    }
                });
            }
        }
        Ok(())
    }

    fn start(&mut self, name: &str) -> Result<()> {
        let svc = self.services[name].clone();
        let image = self.image(name);
        let root = self.plan.work.join("roots").join(name);
        let work = self.plan.work.clone();
        std::fs::create_dir_all(work.join("logs")).map_err(|e| e.to_string())?;
        let mut mounts: Vec<(String, Mount)> = Vec::new();
        for dir in ["usr", "dev", "proc", ".host-etc", "etc", "run", "var", "tmp"] {
            std::fs::create_dir_all(root.join(dir)).map_err(|e| e.to_string())?;
        }
        std::fs::set_permissions(root.join("tmp"), std::fs::Permissions::from_mode(0o1777))
            .map_err(|e| e.to_string())?;
        for link in ["bin", "lib", "lib64", "sbin"] {
            let _ = symlink(format!("usr/{link}"), root.join(link));
        }
        let _ = symlink("/run", root.join("var/run"));
        // /etc: the host's files (libc, certificates, nsswitch) except the
        // ones a container gets of its own.
        for entry in std::fs::read_dir("/etc").map_err(|e| e.to_string())?.flatten() {
            let file = entry.file_name();
            if ["hosts", "passwd", "group", "hostname", "resolv.conf"].iter().any(|own| file == *own) {
                continue;
            }
            let _ = symlink(Path::new("/.host-etc").join(&file), root.join("etc").join(&file));
        }
        std::fs::write(root.join("etc/hosts"), self.hosts(name)).map_err(|e| e.to_string())?;
        std::fs::write(root.join("etc/hostname"), format!("{name}\n")).map_err(|e| e.to_string())?;
        std::fs::write(root.join("etc/resolv.conf"), "").map_err(|e| e.to_string())?;
        std::fs::write(
            root.join("etc/passwd"),
            format!(
                "root:x:0:0:root:/root:/bin/sh\npostgres:x:{UID}:{UID}::/var/lib/postgresql:/bin/sh\n\
                 openbao:x:{UID}:{UID}::/openbao:/bin/false\nnonroot:x:{UID}:{UID}::/home/nonroot:/bin/false\n"
            ),
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(
            root.join("etc/group"),
            format!("root:x:0:\npostgres:x:{UID}:\nopenbao:x:{UID}:\nnonroot:x:{UID}:\n"),
        )
        .map_err(|e| e.to_string())?;
        mounts.push(("/usr".into(), Mount::Bind { source: "/usr".into(), read_only: true }));
        mounts.push(("/dev".into(), Mount::Bind { source: "/dev".into(), read_only: false }));
        mounts.push(("/proc".into(), Mount::Bind { source: "/proc".into(), read_only: false }));
        mounts.push(("/.host-etc".into(), Mount::Bind { source: "/etc".into(), read_only: true }));
        // The image's own files: /usr/local is the image's, not the host's.
        mounts.push(("/usr/local".into(), Mount::Tmpfs { options: "size=1m,mode=0755".into() }));
        for (target, source) in image.files(&self.plan) {
            mounts.push((target, Mount::Bind { source, read_only: true }));
        }
        for dir in image.directories() {
            std::fs::create_dir_all(root.join(dir.trim_start_matches('/'))).map_err(|e| e.to_string())?;
            std::fs::set_permissions(root.join(dir.trim_start_matches('/')), std::fs::Permissions::from_mode(0o700))
                .map_err(|e| e.to_string())?;
        }
        for volume in svc["volumes"].as_array().into_iter().flatten() {
            let target = volume["target"].as_str().unwrap_or_default().to_owned();
            let read_only = volume["read_only"].as_bool().unwrap_or(false);
            match volume["type"].as_str() {
                Some("bind") => {
                    let source = PathBuf::from(volume["source"].as_str().unwrap_or_default());
                    mounts.push((target, Mount::Bind { source, read_only }));
                }
                Some("volume") => {
                    let named = volume["source"].as_str().unwrap_or_default();
                    let mut source = work.join("volumes").join(named);
                    if self.fresh_volumes.remove(named) {
                        // A new volume's root is the image's directory at the
                        // mount point (its owner) or else root's, 0755: not
                        // writable by the container's user.
                        let writable = image.directories().contains(&target);
                        let mode = if writable { 0o755 } else { 0o555 };
                        std::fs::set_permissions(&source, std::fs::Permissions::from_mode(mode))
                            .map_err(|e| e.to_string())?;
                    }
                    if let Some(subpath) = volume["volume"]["subpath"].as_str() {
                        source = source.join(subpath);
                    }
                    if !source.exists() {
                        return Err(format!("{name}: volume {named} has no {}", source.display()));
                    }
                    mounts.push((target, Mount::Bind { source, read_only }));
                }
                // Docker's tmpfs default mode is 1777.
                Some("tmpfs") => mounts.push((target, Mount::Tmpfs { options: "mode=1777".into() })),
                other => return Err(format!("{name}: volume type {other:?} not rehearsed")),
            }
        }
        for tmpfs in svc["tmpfs"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            let (target, options) = tmpfs.split_once(':').unwrap_or((tmpfs, ""));
            let options = if options.contains("mode=") { options.to_owned() } else { format!("{options},mode=1777") };
            mounts.push((target.to_owned(), Mount::Tmpfs { options: options.trim_start_matches(',').to_owned() }));
        }

        let mut script = String::from("set -e\nread go\nexec </dev/null\nip link set lo up\n");
        let networks = self.service_networks(name);
        for (k, network) in networks.iter().enumerate() {
            let _ =
                writeln!(script, "ip addr add {}/24 dev eth{k}\nip link set eth{k} up", self.address(name, network));
        }
        script.push_str("echo 0 > /proc/sys/net/ipv4/ip_unprivileged_port_start\n");
        let r = root.display().to_string();
        let _ = writeln!(script, "R='{r}'\nmount --bind \"$R\" \"$R\"");
        for (target, mount) in &mounts {
            let at = format!("{r}{target}");
            match mount {
                Mount::Bind { source, .. } => {
                    // An image file replaces the host's (e.g. /etc/rsyslog.conf).
                    if std::fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                        std::fs::remove_file(&at).map_err(|e| format!("{at}: {e}"))?;
                    }
                    if source.is_dir() {
                        std::fs::create_dir_all(&at).map_err(|e| format!("{at}: {e}"))?;
                    } else if !Path::new(&at).exists() && !target.starts_with("/usr/local") {
                        if let Some(parent) = Path::new(&at).parent() {
                            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                        }
                        std::fs::write(&at, "").map_err(|e| format!("{at}: {e}"))?;
                    }
                    if target.starts_with("/usr/local/") {
                        // Inside the tmpfs mounted above: created by the script.
                        let _ = writeln!(script, "mkdir -p \"$(dirname '{at}')\" && touch '{at}'");
                    }
                    let _ = writeln!(script, "mount --rbind '{}' '{at}'", source.display());
                }
                Mount::Tmpfs { options } => {
                    std::fs::create_dir_all(&at).map_err(|e| e.to_string())?;
                    let _ = writeln!(script, "mount -t tmpfs -o '{options}' tmpfs '{at}'");
                }
            }
        }
        for (target, mount) in &mounts {
            if let Mount::Bind { read_only: true, .. } = mount {
                let _ = writeln!(script, "remount_ro '{r}{target}'");
            }
        }
        if svc["read_only"].as_bool() == Some(true) {
            script.push_str("remount_ro \"$R\"\n");
        }
        // Read-only bind mounts keep the flags the kernel locked on the source mount.
        script.insert_str(
            0,
            "remount_ro() { mount -o remount,bind,ro \"$1\" 2>/dev/null || mount -o remount,bind,ro,nosuid,nodev \"$1\" \
             2>/dev/null || mount -o remount,bind,ro,nosuid,nodev,noexec \"$1\"; }\n",
        );
        let mut env: BTreeMap<String, String> = image.environment(&self.plan);
        for (key, value) in svc["environment"].as_object().into_iter().flatten() {
            env.insert(key.clone(), unescape(value.as_str().unwrap_or_default()));
        }
        let mut argv: Vec<String> = Vec::new();
        let entrypoint = strings(&svc["entrypoint"]);
        let command = strings(&svc["command"]);
        match entrypoint {
            Some(entrypoint) => {
                argv.extend(entrypoint);
                argv.extend(command.unwrap_or_default());
            }
            None => {
                argv.extend(image.entrypoint());
                argv.extend(command.unwrap_or_else(|| image.command()));
            }
        }
        let mut exec = format!(
            "exec chroot \"$R\" /usr/bin/setpriv --pdeathsig KILL --inh-caps=-all --ambient-caps=-all --bounding-set=-all{} -- /usr/bin/env -i",
            if svc["security_opt"].to_string().contains("no-new-privileges") { " --no-new-privs" } else { "" }
        );
        for (key, value) in &env {
            let _ = write!(exec, " {}", quote(&format!("{key}={value}")));
        }
        for arg in &argv {
            let _ = write!(exec, " {}", quote(arg));
        }
        script.push_str(&exec);
        script.push('\n');
        std::fs::write(work.join("logs").join(format!("{name}.sh")), &script).map_err(|e| e.to_string())?;

        let log = std::fs::File::create(work.join("logs").join(format!("{name}.log"))).map_err(|e| e.to_string())?;
        let mut child = Command::new("unshare")
            .args(["--net", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", &script])
            .stdin(Stdio::piped())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("unshare: {e}"))?;
        let pid = child.id().to_string();
        // The veths go into the child's namespace: wait until it has one.
        let own = std::fs::read_link("/proc/self/ns/net").map_err(|e| e.to_string())?;
        let unshared = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).map_err(|e| format!("{name}: {e}"))? == own {
            if Instant::now() > unshared {
                return Err(format!("{name}: no network namespace of its own after 10 s"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let index = self.index(name);
        for (k, network) in networks.iter().enumerate() {
            let veth = format!("v{index}n{k}");
            let bridge = format!("br{}", self.networks.get(network).copied().unwrap_or(0));
            sh("ip", &["link", "add", &veth, "type", "veth", "peer", "name", &format!("eth{k}"), "netns", &pid])?;
            sh("ip", &["link", "set", &veth, "master", &bridge, "up"])?;
        }
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(b"go\n");
        }
        println!("started {name}");
        let one_shot = svc["restart"].as_str() == Some("no");
        self.running.push(Container { name: name.to_owned(), child, exited: None, one_shot, env });
        Ok(())
    }

    /// `/etc/hosts` for `service`: every service and alias on a network it shares.
    fn hosts(&self, service: &str) -> String {
        let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
        let mine = self.service_networks(service);
        let mut named = BTreeSet::new();
        for (other, svc) in &self.services {
            let theirs = self.service_networks(other);
            // An alias is a name on its network only (Docker's DNS is per network).
            for shared in mine.iter().filter(|n| theirs.contains(n)) {
                let aliases = svc["networks"][shared.as_str()]["aliases"].as_array().cloned().unwrap_or_default();
                let names: Vec<String> = std::iter::once(other.clone())
                    .chain(aliases.iter().filter_map(|a| a.as_str().map(str::to_owned)))
                    .filter(|name| named.insert(name.clone()))
                    .collect();
                if !names.is_empty() {
                    let _ = writeln!(hosts, "{} {}", self.address(other, shared), names.join(" "));
                }
            }
        }
        hosts
    }

    /// Stop what runs, dependents before what they depend on (reverse start
    /// order, one at a time): the image's stop signal, then SIGKILL after the
    /// grace period.
    fn stop(&mut self) {
        self.reap();
        let signals: BTreeMap<String, &str> =
            self.services.keys().map(|name| (name.clone(), self.image(name).stop_signal())).collect();
        for container in self.running.iter_mut().rev().filter(|c| c.exited.is_none()) {
            let signal = format!("-{}", signals.get(&container.name).copied().unwrap_or("TERM"));
            let _ = Command::new("kill").args([signal.as_str(), &container.child.id().to_string()]).status();
            let deadline = Instant::now() + STOP_GRACE;
            let status = loop {
                match container.child.try_wait() {
                    Ok(Some(status)) => break Some(status),
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
                    _ => break None,
                }
            };
            match status {
                Some(status) => println!("exited {} {}", container.name, status.code().unwrap_or(-1)),
                None => {
                    let _ = container.child.kill();
                    let _ = container.child.wait();
                    println!("killed {}", container.name);
                }
            }
            container.exited = Some(status.and_then(|s| s.code()).unwrap_or(-1));
        }
    }
}

enum Mount {
    Bind { source: PathBuf, read_only: bool },
    Tmpfs { options: String },
}

/// A list of strings as compose runs them: `config` output keeps `$$`
/// (an escaped `$`) for re-reading; the runtime gets `$`.
fn strings(value: &Value) -> Option<Vec<String>> {
    value.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(unescape)).collect())
}

fn unescape(value: &str) -> String {
    value.replace("$$", "$")
}

/// Single-quote for `sh`.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Copy both ways until either side closes.
fn splice(client: std::os::unix::net::UnixStream, upstream: std::net::TcpStream) {
    let (Ok(mut client_read), Ok(mut upstream_write)) = (client.try_clone(), upstream.try_clone()) else { return };
    let to_upstream = std::thread::spawn(move || {
        let _ = std::io::copy(&mut client_read, &mut upstream_write);
        let _ = upstream_write.shutdown(std::net::Shutdown::Write);
    });
    let (mut upstream_read, mut client_write) = (upstream, client);
    let _ = std::io::copy(&mut upstream_read, &mut client_write);
    let _ = client_write.shutdown(std::net::Shutdown::Write);
    let _ = to_upstream.join();
}
