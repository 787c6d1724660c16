//! Delivering records to a SIEM: RFC 5424 syslog messages over TLS with RFC
//! 5425 octet-counting framing, server certificate verified.
//!
//! A background task owns the connection. Records wait in a bounded buffer —
//! and, with a spool directory, on disk — while the SIEM is unreachable, and
//! are delivered in order once it is back, also after a restart.
//! A write into a socket whose peer has just died can "succeed", so after a
//! reconnect the last [`REPLAY`] records of the previous connection are sent
//! again: receivers deduplicate by `event.id`; the chain verifier skips the
//! resends. When the buffer is full the oldest record is dropped and counted;
//! the [`crate::AuditLog`] turns the count into an `audit_overflow` event and
//! the counter is exported as a metric.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// Records re-sent after a reconnect (the at-most-lost window of a dead socket).
pub const REPLAY: usize = 32;

/// Where the SIEM is.
#[derive(Debug, Clone)]
pub struct SiemTarget {
    /// `host:port`.
    pub address: String,
    /// Server name to verify (DNS name in its certificate).
    pub server_name: String,
    /// CA certificate(s), PEM.
    pub ca_pem: String,
    /// Records held while the SIEM is unreachable.
    pub buffer: usize,
    /// Keep undelivered records on disk here, so a crash during an outage
    /// loses nothing (see [`crate::spool`]). `None`: memory only.
    pub spool_dir: Option<std::path::PathBuf>,
    /// The client certificate for mutual TLS, when the SIEM requires one:
    /// [`client_cert_from_pem`] for fixed files, or a rotating workload
    /// identity (each new connection asks the resolver again).
    pub client_cert: Option<Arc<dyn rustls::client::ResolvesClientCert>>,
}

/// Always the same certificate and key.
#[derive(Debug)]
struct StaticClientCert(Arc<rustls::sign::CertifiedKey>);

impl rustls::client::ResolvesClientCert for StaticClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client certificate for [`SiemTarget::client_cert`] from a PEM chain
/// (leaf first) and a PEM private key.
pub fn client_cert_from_pem(
    chain_pem: &str,
    key_pem: &str,
) -> Result<Arc<dyn rustls::client::ResolvesClientCert>, crate::AuditError> {
    use rustls_pki_types::pem::PemObject;
    let chain = rustls_pki_types::CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| crate::AuditError::Config(format!("client certificate: {e}")))?;
    if chain.is_empty() {
        return Err(crate::AuditError::Config("client certificate: no certificate in the PEM".into()));
    }
    // Never echo key material: the error names the problem, not the content.
    let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|_| crate::AuditError::Config("client key: not a PEM private key".into()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = rustls::sign::CertifiedKey::from_der(chain, key, &provider)
        .map_err(|e| crate::AuditError::Config(format!("client certificate and key: {e}")))?;
    Ok(Arc::new(StaticClientCert(Arc::new(certified))))
}

/// Counters shared with the log handle.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Records dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Records written to the SIEM (resends included).
    pub sent: AtomicU64,
}

/// Start the delivery task; returns the channel that feeds it.
pub(crate) fn spawn(
    target: SiemTarget,
    hostname: String,
    app: String,
    counters: Arc<SinkCounters>,
) -> Result<mpsc::UnboundedSender<(u8, String)>, crate::AuditError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(target.ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| crate::AuditError::Config(e.to_string()))?;
        roots.add(cert).map_err(|e| crate::AuditError::Config(e.to_string()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| crate::AuditError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let config = match &target.client_cert {
        Some(resolver) => config.with_client_cert_resolver(resolver.clone()),
        None => config.with_no_client_auth(),
    };
    let connector = TlsConnector::from(Arc::new(config));
    let server_name =
        ServerName::try_from(target.server_name.clone()).map_err(|e| crate::AuditError::Config(e.to_string()))?;
    let (tx, mut rx) = mpsc::unbounded_channel::<(u8, String)>();
    let (mut spool, recovered) = match &target.spool_dir {
        Some(dir) => {
            let (spool, recovered) = crate::spool::Spool::open(dir)
                .map_err(|e| crate::AuditError::Config(format!("audit spool {}: {e}", dir.display())))?;
            (Some(spool), recovered)
        }
        None => (None, Vec::new()),
    };
    tokio::spawn(async move {
        // Records not yet delivered, in order; each has its place in the spool.
        let mut pending: VecDeque<Vec<u8>> = recovered.into();
        // Records re-sent after a reconnect (already counted as delivered).
        let mut replay: VecDeque<Vec<u8>> = VecDeque::new();
        let mut recent: VecDeque<Vec<u8>> = VecDeque::new();
        let mut connection: Option<TlsStream<TcpStream>> = None;
        let mut backoff = Duration::from_millis(100);
        let accept = |item: (u8, String), pending: &mut VecDeque<Vec<u8>>, spool: &mut Option<crate::spool::Spool>| {
            let framed = frame(&hostname, &app, item);
            if let Some(spool) = spool.as_mut()
                && let Err(error) = spool.append(&framed)
            {
                tracing::warn!(%error, "audit spool write failed; record held in memory only");
            }
            pending.push_back(framed);
        };
        loop {
            if pending.is_empty() && replay.is_empty() {
                match rx.recv().await {
                    Some(item) => accept(item, &mut pending, &mut spool),
                    None => return, // the log was dropped
                }
            }
            while let Ok(item) = rx.try_recv() {
                accept(item, &mut pending, &mut spool);
            }
            if let Some(spool) = spool.as_ref() {
                let _ = spool.sync();
            }
            while pending.len() > target.buffer {
                pending.pop_front();
                counters.dropped.fetch_add(1, Ordering::SeqCst);
                if let Some(spool) = spool.as_mut() {
                    let _ = spool.advance();
                }
            }
            if connection.as_ref().is_some_and(|c| peer_closed(c.get_ref().0)) {
                connection = None;
            }
            let stream = match connection.as_mut() {
                Some(stream) => stream,
                None => match connect(&connector, &target.address, server_name.clone()).await {
                    Ok(stream) => {
                        backoff = Duration::from_millis(100);
                        // Whatever the dead socket may have swallowed goes again.
                        replay.extend(recent.drain(..));
                        connection.insert(stream)
                    }
                    Err(error) => {
                        tracing::debug!(%error, "SIEM unreachable; holding audit records");
                        // Keep accepting records while waiting (the buffer bounds them).
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            item = rx.recv() => match item {
                                Some(item) => accept(item, &mut pending, &mut spool),
                                None => return,
                            },
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                        continue;
                    }
                },
            };
            let (record, from_replay) = match (replay.front(), pending.front()) {
                (Some(record), _) => (record.clone(), true),
                (None, Some(record)) => (record.clone(), false),
                (None, None) => continue,
            };
            match async { stream.write_all(&record).await.and(stream.flush().await) }.await {
                Ok(()) => {
                    counters.sent.fetch_add(1, Ordering::SeqCst);
                    if from_replay {
                        replay.pop_front();
                        continue;
                    }
                    pending.pop_front();
                    if let Some(spool) = spool.as_mut()
                        && let Err(error) = spool.advance()
                    {
                        tracing::warn!(%error, "audit spool offset update failed");
                    }
                    recent.push_back(record);
                    if recent.len() > REPLAY {
                        recent.pop_front();
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "SIEM connection lost");
                    connection = None;
                }
            }
        }
    });
    Ok(tx)
}

/// Whether the peer has closed the TCP connection (a peek returns EOF or an error).
fn peer_closed(tcp: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    match tcp.poll_peek(&mut cx, &mut buf) {
        std::task::Poll::Ready(Ok(0)) | std::task::Poll::Ready(Err(_)) => true,
        std::task::Poll::Ready(Ok(_)) | std::task::Poll::Pending => false,
    }
}

async fn connect(
    connector: &TlsConnector,
    address: &str,
    name: ServerName<'static>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(address))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
    tcp.set_nodelay(true)?;
    tokio::time::timeout(Duration::from_secs(5), connector.connect(name, tcp))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timeout"))?
}

/// RFC 5424 message (facility 10, security/authorization) in RFC 5425 framing.
fn frame(hostname: &str, app: &str, (severity, record): (u8, String)) -> Vec<u8> {
    let pri = 10 * 8 + u16::from(severity);
    let timestamp = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "-".to_owned());
    let seq = serde_json::from_str::<serde_json::Value>(&record)
        .ok()
        .and_then(|v| v["estate"]["seq"].as_u64())
        .map_or_else(|| "-".to_owned(), |s| s.to_string());
    let message = format!(
        "<{pri}>1 {timestamp} {hostname} {app} {pid} AUDIT [estate@32473 seq=\"{seq}\"] {record}",
        pid = std::process::id()
    );
    format!("{} {message}", message.len()).into_bytes()
}
