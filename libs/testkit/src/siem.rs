//! A real SIEM receiver: `rsyslogd -n` accepting RFC 5425 syslog over TLS
//! (imtcp + gtls, octet-counted framing) and writing each received message
//! as one JSON line, which tests read back with [`TestSiem::wait_for_events`].
//!
//! The receiver can be stopped and started again on the same port, so tests
//! can simulate a SIEM outage.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::pki::Leaf;
use crate::process::ChildGuard;
use crate::{READY_TIMEOUT, TestPki, TestkitError, tools};

/// Whether the receiver requires a client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SiemAuth {
    /// Server-authenticated TLS only.
    ServerOnly,
    /// Mutual TLS: clients must present a certificate from the test CA.
    Mutual,
}

/// One received syslog message.
#[derive(Debug, Clone)]
pub struct ReceivedEvent {
    /// RFC 5424 APP-NAME.
    pub app_name: String,
    /// RFC 5424 MSGID.
    pub msg_id: String,
    /// RFC 5424 STRUCTURED-DATA, raw.
    pub structured_data: String,
    /// The message body.
    pub msg: String,
    /// The whole received record.
    pub raw: Value,
}

impl ReceivedEvent {
    /// The message body parsed as JSON, when it is JSON.
    pub fn msg_json(&self) -> Option<Value> {
        serde_json::from_str(&self.msg).ok()
    }
}

/// A running rsyslog receiver; stopped when dropped.
pub struct TestSiem {
    process: Option<ChildGuard>,
    port: u16,
    dir: TempDir,
    pki: TestPki,
    auth: SiemAuth,
}

impl TestSiem {
    /// Start a receiver with its own test CA.
    pub async fn start(auth: SiemAuth) -> Result<Self, TestkitError> {
        let pki = TestPki::new("siem")?;
        let dir = tempfile::Builder::new().prefix("estate-siem-").tempdir().map_err(TestkitError::io("tempdir"))?;
        pki.localhost_server()?.write_to(dir.path(), "server")?;
        let mut siem = Self { process: None, port: 0, dir, pki, auth };
        siem.spawn(0).await?;
        Ok(siem)
    }

    /// The file the receiver writes every event to (one JSON line each).
    pub fn events_path(&self) -> PathBuf {
        self.dir.path().join("events.jsonl")
    }

    fn write_conf(&self, port: u16) -> Result<PathBuf, TestkitError> {
        let d = self.dir.path();
        let work = d.join("work");
        fs::create_dir_all(&work).map_err(TestkitError::io("mkdir work"))?;
        let auth_mode = match self.auth {
            SiemAuth::ServerOnly => "anon",
            SiemAuth::Mutual => "x509/certvalid",
        };
        let conf = format!(
            r#"global(workDirectory="{work}"
       DefaultNetstreamDriver="gtls"
       DefaultNetstreamDriverCAFile="{ca}"
       DefaultNetstreamDriverCertFile="{cert}"
       DefaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.AuthMode="{auth_mode}")
template(name="estate_json" type="list" option.jsonf="on") {{
  property(outname="received_at" name="timegenerated" dateFormat="rfc3339" format="jsonf")
  property(outname="hostname" name="hostname" format="jsonf")
  property(outname="app_name" name="app-name" format="jsonf")
  property(outname="procid" name="procid" format="jsonf")
  property(outname="msgid" name="msgid" format="jsonf")
  property(outname="structured_data" name="structured-data" format="jsonf")
  property(outname="msg" name="msg" format="jsonf")
}}
ruleset(name="siem") {{ action(type="omfile" file="{events}" template="estate_json") }}
input(type="imtcp" address="127.0.0.1" port="{port}" listenPortFileName="{portfile}" ruleset="siem")
"#,
            work = work.display(),
            ca = d.join("server-ca.crt").display(),
            cert = d.join("server.crt").display(),
            key = d.join("server.key").display(),
            events = self.events_path().display(),
            portfile = d.join("port").display(),
        );
        let path = d.join("rsyslog.conf");
        fs::write(&path, conf).map_err(TestkitError::io("write rsyslog.conf"))?;
        Ok(path)
    }

    /// Start rsyslogd on `port` (0: let it choose and report it in a port
    /// file) and wait until it listens.
    async fn spawn(&mut self, port: u16) -> Result<(), TestkitError> {
        let rsyslogd = tools::rsyslogd()?;
        let conf = self.write_conf(port)?;
        let port_file = self.dir.path().join("port");
        let _ = fs::remove_file(&port_file);
        let log_path = self.dir.path().join("rsyslogd.log");
        let log = fs::File::create(&log_path).map_err(TestkitError::io("create rsyslogd.log"))?;
        let log_err = log.try_clone().map_err(TestkitError::io("clone log handle"))?;
        let child = Command::new(rsyslogd)
            .arg("-n")
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(self.dir.path().join("rsyslogd.pid"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(TestkitError::io("spawn rsyslogd"))?;
        let mut process = ChildGuard::new(child);
        // rsyslog writes the bound port into the file once it listens (no port race).
        let deadline = Instant::now() + READY_TIMEOUT;
        self.port = loop {
            if let Some(status) = process.try_wait() {
                return Err(TestkitError::failed(
                    "rsyslogd",
                    format!("exited early ({status}); see {}", log_path.display()),
                ));
            }
            if port == 0 {
                if let Some(port) = fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok()) {
                    break port;
                }
            } else if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                // A restart on a known port: rsyslog writes no port file then, so probe it.
                break port;
            }
            if Instant::now() > deadline {
                return Err(TestkitError::NotReady {
                    what: "rsyslogd",
                    seconds: READY_TIMEOUT.as_secs(),
                    log: log_path,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        self.process = Some(process);
        Ok(())
    }

    /// Stop the receiver (a SIEM outage). Received events stay readable.
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Start it again on the same port.
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop();
        let port = self.port;
        self.spawn(port).await
    }

    /// The TLS syslog port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// rsyslogd's PID while running.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().and_then(ChildGuard::pid)
    }

    /// The CA that signed the receiver's certificate (clients trust it).
    pub fn ca_pem(&self) -> String {
        self.pki.ca_pem()
    }

    /// The receiver's test CA, e.g. to issue client certificates for [`SiemAuth::Mutual`].
    pub fn pki(&self) -> &TestPki {
        &self.pki
    }

    /// A client certificate the receiver accepts in [`SiemAuth::Mutual`] mode.
    pub fn client_leaf(&self, spiffe_id: &str) -> Result<Leaf, TestkitError> {
        self.pki.issue(&crate::LeafSpec::spiffe(spiffe_id))
    }

    /// Every event received so far.
    pub fn events(&self) -> Result<Vec<ReceivedEvent>, TestkitError> {
        let text = match fs::read_to_string(self.events_path()) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(TestkitError::io("read events")(e)),
        };
        // The last line may still be being written; only complete lines count.
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        complete
            .lines()
            .map(|line| {
                let raw: Value = serde_json::from_str(line)
                    .map_err(|e| TestkitError::failed("parse received event", e.to_string()))?;
                let field = |name: &str| raw.get(name).and_then(Value::as_str).unwrap_or_default().to_owned();
                Ok(ReceivedEvent {
                    app_name: field("app_name"),
                    msg_id: field("msgid"),
                    structured_data: field("structured_data"),
                    msg: field("msg"),
                    raw,
                })
            })
            .collect()
    }

    /// Wait until at least `count` events have arrived, or fail after `timeout`.
    pub async fn wait_for_events(&self, count: usize, timeout: Duration) -> Result<Vec<ReceivedEvent>, TestkitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.events()?;
            if events.len() >= count {
                return Ok(events);
            }
            if Instant::now() > deadline {
                return Err(TestkitError::failed(
                    "waiting for SIEM events",
                    format!("{} of {count} arrived within {timeout:?}", events.len()),
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
