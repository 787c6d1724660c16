//! Where outbound calls get their bearer token.
//!
//! [`ClientCredentialsSource`] (FLOW-CC): a cached client-credentials token.
//! - Fast path: a lock-free read of the cached token.
//! - Refresh is **single-flight**: one caller fetches while the others wait
//!   for its result (100 concurrent callers → 1 token request).
//! - **Proactive**: the token is replaced once less than a margin of its
//!   lifetime is left (a fifth, between 1 s and 60 s), so a handed-out token
//!   does not expire in flight.
//! - **Backoff** after a failure (100 ms doubling to 30 s): callers get the
//!   still-valid cached token if there is one, else an immediate error, and
//!   the authorization server is not hammered while it is down.
//!
//! [`RelayedToken`] (FLOW-RELAY): the caller's own token, forwarded.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use estate_tokens::VerifiedToken;
use secrecy::SecretString;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::client::{OAuthClient, OAuthError};

/// Something that yields a bearer token for an outbound call.
pub trait TokenSource: Clone + Send + Sync + 'static {
    /// The token to send now.
    fn token(&self) -> impl Future<Output = Result<SecretString, OAuthError>> + Send;

    /// The receiver refused `token` as invalid (HTTP 401, gRPC
    /// `UNAUTHENTICATED`): it may have been revoked (PC-12), so a cached copy
    /// must not be sent again.
    fn rejected(&self, token: &SecretString) {
        let _ = token;
    }
}

const MIN_MARGIN: Duration = Duration::from_secs(1);
const MAX_MARGIN: Duration = Duration::from_secs(60);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Cached {
    token: SecretString,
    refresh_at: Instant,
    expires_at: Instant,
}

#[derive(Default)]
struct RefreshState {
    failures: u32,
    retry_after: Option<Instant>,
}

struct Inner {
    client: OAuthClient,
    scope: String,
    audience: Option<String>,
    cached: ArcSwapOption<Cached>,
    refresh: Mutex<RefreshState>,
}

/// A client-credentials token, cached and refreshed (see the module docs).
#[derive(Clone)]
pub struct ClientCredentialsSource {
    inner: Arc<Inner>,
}

impl ClientCredentialsSource {
    /// Tokens for `scope` (space-separated) at `audience`.
    pub fn new(client: OAuthClient, scope: &str, audience: Option<&str>) -> Self {
        Self {
            inner: Arc::new(Inner {
                client,
                scope: scope.to_owned(),
                audience: audience.map(str::to_owned),
                cached: ArcSwapOption::empty(),
                refresh: Mutex::new(RefreshState::default()),
            }),
        }
    }

    fn fresh(&self, now: Instant) -> Option<SecretString> {
        let cached = self.inner.cached.load();
        cached.as_ref().filter(|c| now < c.refresh_at).map(|c| c.token.clone())
    }

    fn still_valid(&self, now: Instant) -> Option<SecretString> {
        let cached = self.inner.cached.load();
        cached.as_ref().filter(|c| now < c.expires_at).map(|c| c.token.clone())
    }

    async fn get(&self) -> Result<SecretString, OAuthError> {
        if let Some(token) = self.fresh(Instant::now()) {
            return Ok(token);
        }
        // Single flight: whoever holds the lock fetches; the others wait here
        // and then find the new token in the cache.
        let mut state = self.inner.refresh.lock().await;
        let now = Instant::now();
        if let Some(token) = self.fresh(now) {
            return Ok(token);
        }
        if state.retry_after.is_some_and(|at| now < at) {
            return self.still_valid(now).ok_or(OAuthError::BackingOff);
        }
        let requested_at = Instant::now();
        match self.inner.client.client_credentials(&self.inner.scope, self.inner.audience.as_deref()).await {
            Ok(issued) => {
                let lifetime = issued.expires_in;
                let margin = (lifetime / 5).clamp(MIN_MARGIN, MAX_MARGIN);
                // Count from when we asked, not when the answer came: conservative.
                let expires_at = requested_at + lifetime;
                let refresh_at = expires_at.checked_sub(margin).unwrap_or(requested_at);
                self.inner.cached.store(Some(Arc::new(Cached {
                    token: issued.access_token.clone(),
                    refresh_at,
                    expires_at,
                })));
                *state = RefreshState::default();
                Ok(issued.access_token)
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                let backoff =
                    FIRST_BACKOFF.saturating_mul(1 << state.failures.min(16).saturating_sub(1)).min(MAX_BACKOFF);
                state.retry_after = Some(Instant::now() + backoff);
                tracing::warn!(
                    client_id = self.inner.client.client_id(),
                    %error,
                    backoff_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX),
                    "client-credentials token refresh failed"
                );
                self.still_valid(Instant::now()).ok_or(error)
            }
        }
    }
}

impl TokenSource for ClientCredentialsSource {
    fn token(&self) -> impl Future<Output = Result<SecretString, OAuthError>> + Send {
        self.get()
    }

    fn rejected(&self, token: &SecretString) {
        use secrecy::ExposeSecret;
        // Drop it only if it is still the cached one (a concurrent refresh may have replaced it).
        let current = self.inner.cached.load();
        if current.as_ref().is_some_and(|c| c.token.expose_secret() == token.expose_secret()) {
            self.inner.cached.compare_and_swap(&current, None);
            tracing::warn!(client_id = self.inner.client.client_id(), "cached token refused downstream; dropped");
        }
    }
}

/// The caller's own, already verified token, forwarded unchanged (FLOW-RELAY).
/// The receiving service re-validates it; relaying proves nothing by itself.
#[derive(Clone)]
pub struct RelayedToken(VerifiedToken);

impl RelayedToken {
    /// Relay `token`.
    pub fn new(token: VerifiedToken) -> Self {
        Self(token)
    }
}

impl TokenSource for RelayedToken {
    fn token(&self) -> impl Future<Output = Result<SecretString, OAuthError>> + Send {
        let token = self.0.bearer().clone();
        async move { Ok(token) }
    }
}
