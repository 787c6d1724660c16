//! What the token endpoint issues, and under which rules.
//!
//! `client_credentials` (FLOW-CC): the client gets a token for itself
//! (`sub` = `client_id`) with scopes ⊆ its registered scopes and audiences ⊆
//! its registered audiences (RFC 8707 `resource` or `audience`).
//!
//! Token exchange (FLOW-TX, RFC 8693): an authenticated client (the actor)
//! presents a user's access token (`subject_token`). It succeeds only when an
//! exchange policy names the actor and one of the subject token's audiences;
//! the requested audience must be in the policy; the scopes are the
//! intersection of the request, the policy and the subject token's own scopes
//! (an exchange never adds a scope). The result keeps `sub`, names the actor
//! in `act` (nested when the subject token already had one) and lives at most
//! 60 s — and never longer than the subject token.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use estate_tokens::{Actor, Scope, Scopes, VerifiedToken, Verifier};
use serde::Serialize;
use serde_json::{Value, json};

use crate::clients::{Client, FormParams};
use crate::keys::KeyRing;
use crate::oauth_error::OAuthError;
use crate::settings::{ExchangePolicy, GrantType};
use crate::store::Store;

/// RFC 8693 token type URI for access tokens.
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// RFC 9068 access-token claims.
#[derive(Serialize)]
struct AccessClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: Value,
    exp: i64,
    iat: i64,
    nbf: i64,
    jti: String,
    client_id: &'a str,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    act: Option<Value>,
}

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
}

/// Issues tokens.
pub struct Issuer {
    issuer: String,
    keys: KeyRing,
    access_ttl: u64,
    exchanged_ttl: u64,
    policies: Vec<ExchangePolicy>,
    /// Verifies our own tokens (subject tokens, introspection, revocation):
    /// our own keys, any of our audiences.
    own_tokens: Verifier,
    store: Arc<Store>,
}

impl Issuer {
    /// Assemble the issuer.
    pub fn new(
        issuer: String,
        keys: KeyRing,
        access_ttl: u64,
        exchanged_ttl: u64,
        policies: Vec<ExchangePolicy>,
        own_tokens: Verifier,
        store: Arc<Store>,
    ) -> Self {
        Self { issuer, keys, access_ttl, exchanged_ttl, policies, own_tokens, store }
    }

    /// Verify one of our own tokens and check it was not revoked.
    async fn live_token(&self, token: &str) -> Result<Option<VerifiedToken>, OAuthError> {
        let Ok(verified) = self.own_tokens.verify(token).await else { return Ok(None) };
        let Some(jti) = verified.jti() else { return Ok(None) };
        let revoked = self.store.is_revoked(jti.as_str()).await.map_err(|error| {
            tracing::error!(%error, "revocation lookup failed");
            OAuthError::ServerError
        })?;
        Ok((!revoked).then_some(verified))
    }

    /// RFC 7662 introspection: `{"active": false}` for anything not a live
    /// token of ours (invalid, expired, revoked), the claims otherwise.
    pub async fn introspect(&self, token: &str) -> Result<Value, OAuthError> {
        let Some(t) = self.live_token(token).await? else { return Ok(json!({ "active": false })) };
        Ok(json!({
            "active": true,
            "iss": t.issuer(),
            "sub": t.subject().as_str(),
            "aud": t.audiences(),
            "client_id": t.client_id().map(|c| c.as_str()),
            "jti": t.jti().map(|j| j.as_str()),
            "scope": t.scopes().to_string(),
            "exp": t.expires_at(),
            "iat": t.issued_at(),
            "token_type": "Bearer",
        }))
    }

    /// RFC 7009 revocation by the client the token was issued to. Invalid or
    /// unknown tokens are not an error (§2.2): nothing to revoke.
    pub async fn revoke(&self, client: &Client, token: &str) -> Result<(), OAuthError> {
        let Ok(verified) = self.own_tokens.verify(token).await else { return Ok(()) };
        let (Some(jti), Some(owner)) = (verified.jti(), verified.client_id()) else { return Ok(()) };
        if owner.as_str() != client.id() {
            // §2.1: only the client the token was issued to may revoke it.
            return Err(OAuthError::UnauthorizedClient("the token was issued to another client"));
        }
        self.store.revoke(jti.as_str(), client.id(), verified.expires_at()).await.map_err(|error| {
            tracing::error!(%error, "revocation store failed");
            OAuthError::ServerError
        })?;
        tracing::info!(target: "audit", event = "token_revoked", client_id = client.id(), jti = %jti, "token revoked");
        Ok(())
    }

    /// The key ring (for the JWKS endpoint).
    pub fn keys(&self) -> &KeyRing {
        &self.keys
    }

    /// `grant_type=client_credentials`.
    pub fn client_credentials(&self, client: &Client, form: &FormParams) -> Result<TokenResponse, OAuthError> {
        if !client.may_use(GrantType::ClientCredentials) {
            return Err(OAuthError::UnauthorizedClient("client may not use this grant"));
        }
        let scopes = requested_scopes(form, client.scopes())?;
        let audiences = requested_audiences(form)?;
        let audiences = if audiences.is_empty() {
            client.audiences().to_vec()
        } else {
            if audiences.iter().any(|a| !client.audiences().contains(a)) {
                return Err(OAuthError::InvalidTarget);
            }
            audiences
        };
        if audiences.is_empty() {
            return Err(OAuthError::InvalidTarget);
        }
        self.issue(client.id(), client.id(), audiences, scopes, self.access_ttl, None, None)
    }

    /// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange`.
    pub async fn exchange(&self, actor: &Client, form: &FormParams) -> Result<TokenResponse, OAuthError> {
        if !actor.may_use(GrantType::TokenExchange) {
            return Err(OAuthError::UnauthorizedClient("client may not exchange tokens"));
        }
        if form.single("subject_token_type")? != Some(ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::InvalidRequest("subject_token_type must be an access token"));
        }
        if form.single("requested_token_type")?.is_some_and(|t| t != ACCESS_TOKEN_TYPE) {
            return Err(OAuthError::InvalidRequest("only access tokens can be requested"));
        }
        if form.single("actor_token")?.is_some() {
            // The authenticated client is the actor; a separate actor token is not supported.
            return Err(OAuthError::InvalidRequest("actor_token is not supported"));
        }
        let subject_token = form.single("subject_token")?.ok_or(OAuthError::InvalidRequest("subject_token missing"))?;
        let subject = self.live_token(subject_token).await?.ok_or_else(|| {
            tracing::info!(actor = actor.id(), "subject token refused (invalid, expired or revoked)");
            OAuthError::InvalidGrant("subject_token is not a valid access token")
        })?;

        let audiences = requested_audiences(form)?;
        if audiences.is_empty() {
            return Err(OAuthError::InvalidTarget);
        }
        // May this actor act for this subject token, towards these audiences?
        let policy = self
            .policies
            .iter()
            .filter(|p| p.actor == actor.id())
            .filter(|p| subject.audiences().iter().any(|a| p.subject_audiences.contains(a)))
            .find(|p| audiences.iter().all(|a| p.audiences.contains(a)))
            .ok_or_else(|| {
                tracing::warn!(actor = actor.id(), subject = %subject.subject(), "token exchange not permitted by policy");
                OAuthError::UnauthorizedClient("client may not act for this token towards this audience")
            })?;
        let policy_scopes: Scopes = policy.scopes.iter().filter_map(|s| s.parse::<Scope>().ok()).collect();
        let allowed = policy_scopes.intersection(subject.scopes());
        let scopes = requested_scopes(form, allowed)?;

        let remaining = u64::try_from(subject.expires_at() - unix_now()).unwrap_or(0);
        let ttl = self.exchanged_ttl.min(remaining);
        if ttl == 0 {
            return Err(OAuthError::InvalidGrant("subject_token is about to expire"));
        }
        let act = actor_claim(actor.id(), subject.actor());
        self.issue(subject.subject().as_str(), actor.id(), audiences, scopes, ttl, Some(act), Some(ACCESS_TOKEN_TYPE))
    }

    #[allow(clippy::too_many_arguments, reason = "one private constructor of the claims")]
    fn issue(
        &self,
        sub: &str,
        client_id: &str,
        audiences: Vec<String>,
        scopes: Scopes,
        ttl: u64,
        act: Option<Value>,
        issued_token_type: Option<&'static str>,
    ) -> Result<TokenResponse, OAuthError> {
        let now = unix_now();
        let aud = match audiences.as_slice() {
            [one] => json!(one),
            many => json!(many),
        };
        let claims = AccessClaims {
            iss: &self.issuer,
            sub,
            aud,
            exp: now + i64::try_from(ttl).unwrap_or(0),
            iat: now,
            nbf: now,
            jti: uuid::Uuid::new_v4().to_string(),
            client_id,
            scope: scopes.to_string(),
            act,
        };
        let access_token = self.keys.sign_access_token(&claims).map_err(|error| {
            tracing::error!(%error, "signing failed");
            OAuthError::ServerError
        })?;
        tracing::info!(sub, client_id, jti = %claims.jti, scope = %claims.scope, ttl, "token issued");
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: claims.scope,
            issued_token_type,
        })
    }
}

/// The `scope` parameter: every entry a known scope within `allowed`;
/// absent means all of `allowed` (RFC 6749 §3.3 lets the server default).
fn requested_scopes(form: &FormParams, allowed: Scopes) -> Result<Scopes, OAuthError> {
    let Some(requested) = form.single("scope")? else {
        return if allowed.is_empty() { Err(OAuthError::InvalidScope) } else { Ok(allowed) };
    };
    let mut scopes = Scopes::empty();
    for name in requested.split(' ').filter(|s| !s.is_empty()) {
        let scope = name.parse::<Scope>().map_err(|_| OAuthError::InvalidScope)?;
        if !allowed.contains(scope) {
            return Err(OAuthError::InvalidScope);
        }
        scopes.insert(scope);
    }
    if scopes.is_empty() { Err(OAuthError::InvalidScope) } else { Ok(scopes) }
}

/// RFC 8707 `resource` (repeatable) and RFC 8693 `audience`, together.
fn requested_audiences(form: &FormParams) -> Result<Vec<String>, OAuthError> {
    let mut audiences: Vec<String> = Vec::new();
    for value in form.all("resource").into_iter().chain(form.all("audience")) {
        if value.len() > 255 || value.chars().any(char::is_control) {
            return Err(OAuthError::InvalidTarget);
        }
        if !audiences.iter().any(|a| a == value) {
            audiences.push(value.to_owned());
        }
    }
    Ok(audiences)
}

/// `act` for a token issued to `actor`, keeping an existing chain underneath (RFC 8693 §4.1).
fn actor_claim(actor: &str, previous: Option<&Actor>) -> Value {
    let mut act = json!({ "sub": actor });
    if let Some(previous) = previous {
        act["act"] = actor_chain(previous);
    }
    act
}

fn actor_chain(actor: &Actor) -> Value {
    let mut value = json!({ "sub": actor.sub().as_str() });
    if let Some(previous) = actor.previous() {
        value["act"] = actor_chain(previous);
    }
    value
}
