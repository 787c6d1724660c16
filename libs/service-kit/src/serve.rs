//! A TLS accept loop for an axum [`Router`] with graceful shutdown.
//!
//! Written out (rather than hidden in a framework) because this is where
//! several controls live, and readers should see them:
//! - every accepted socket gets `TCP_NODELAY` (without it, the first response
//!   on a new TLS connection stalls ~40 ms, PLATFORM-NOTES);
//! - the TLS handshake has a deadline, so a client that connects and says
//!   nothing cannot hold a task forever;
//! - each request carries a [`ConnectionInfo`] with the remote address and
//!   the client certificate chain, which workload identity (SPIFFE) reads;
//! - on shutdown the listener closes first, then in-flight connections get a
//!   grace period to finish before they are cut.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::tls::ServerTls;

/// Completes once the shutdown flag is set (or its sender is gone).
async fn stop_requested(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not Send; drop it here, before the caller awaits anything else.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// What a handler may know about the connection a request came over.
///
/// The remote address is for logs and rate limits only: Estate grants nothing
/// based on it (PC-04: loopback source address grants nothing).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The TCP peer.
    pub remote_addr: SocketAddr,
    /// The verified client certificate chain, leaf first, when the listener
    /// asked for one (mTLS); empty otherwise.
    pub peer_certificates: Arc<Vec<CertificateDer<'static>>>,
}

/// Most header fields in an HTTP/1.1 request.
pub const MAX_HEADER_FIELDS: usize = 64;
/// Largest HTTP/1.1 request head (and read buffer).
pub const MAX_HTTP1_HEAD_BYTES: usize = 64 * 1024;
/// Largest HTTP/2 header list.
pub const MAX_HTTP2_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// A bound TLS listener, not yet serving.
pub struct TlsListener {
    tcp: TcpListener,
    tls: ServerTls,
    handshake_timeout: Duration,
}

impl TlsListener {
    /// Bind `addr` (port 0 picks a free port).
    pub async fn bind(addr: SocketAddr, tls: ServerTls, handshake_timeout: Duration) -> io::Result<Self> {
        let tcp = TcpListener::bind(addr).await?;
        Ok(Self { tcp, tls, handshake_timeout })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// Serve `router` until `shutdown` turns true, then drain for up to `grace`.
    /// Returns whether every connection finished within the grace period.
    pub async fn serve(self, router: Router, mut shutdown: watch::Receiver<bool>, grace: Duration) -> bool {
        let graceful = GracefulShutdown::new();
        let mut http = Builder::new(TokioExecutor::new());
        // Slow-header (slowloris) guard on HTTP/1.1.
        // Header caps (OWASP API4): at most 64 header fields and a 64 KiB
        // request head on HTTP/1.1 (431 beyond), a 16 KiB header list on HTTP/2.
        http.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.handshake_timeout)
            .max_headers(MAX_HEADER_FIELDS)
            .max_buf_size(MAX_HTTP1_HEAD_BYTES);
        http.http2().timer(TokioTimer::new()).max_header_list_size(MAX_HTTP2_HEADER_LIST_BYTES);
        let http = Arc::new(http);

        loop {
            let (tcp, remote_addr) = tokio::select! {
                accepted = self.tcp.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(error) => {
                        // Typically EMFILE; back off briefly instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = stop_requested(&mut shutdown) => break,
            };
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "cannot set TCP_NODELAY");
            }
            let acceptor = TlsAcceptor::from(self.tls.current());
            let handshake_timeout = self.handshake_timeout;
            let router = router.clone();
            let http = http.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(error)) => {
                        tracing::debug!(%remote_addr, %error, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote_addr, "TLS handshake timed out");
                        return;
                    }
                };
                let peer_certificates = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .map(|chain| chain.iter().map(|c| c.clone().into_owned()).collect())
                    .unwrap_or_default();
                let info = ConnectionInfo { remote_addr, peer_certificates: Arc::new(peer_certificates) };
                let service = hyper::service::service_fn(move |mut request: http::Request<Incoming>| {
                    request.extensions_mut().insert(info.clone());
                    router.clone().oneshot(request.map(Body::new))
                });
                let connection = http.serve_connection_with_upgrades(TokioIo::new(stream), service);
                if let Err(error) = watcher.watch(connection.into_owned()).await {
                    tracing::debug!(%remote_addr, error = %error, "connection ended with an error");
                }
            });
        }
        drop(self.tcp);
        tokio::time::timeout(grace, graceful.shutdown()).await.is_ok()
    }
}
