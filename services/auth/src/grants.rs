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

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq;

use crate::clients::{Client, FormParams, sha256};
use crate::keys::KeyRing;
use crate::oauth_error::OAuthError;
use crate::settings::{ExchangePolicy, GrantType};
use crate::store::Store;
use crate::store::{CodeUse, RefreshRecord, RefreshUse};
use estate_audit::{Action, AuditEvent, AuditLog, Outcome};

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

/// A successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1, OIDC Core §3.1.3.3).
#[derive(Debug, Serialize)]
pub struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    issued_token_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
    #[serde(skip)]
    jti: String,
}

/// OIDC ID token claims.
#[derive(Serialize)]
struct IdTokenClaims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    azp: &'a str,
    exp: i64,
    iat: i64,
    auth_time: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a str>,
}

/// How long what we issue lives, in seconds.
#[derive(Debug, Clone, Copy)]
pub struct Lifetimes {
    /// Access tokens (≤ 300).
    pub access_secs: u64,
    /// Exchanged tokens (≤ 60).
    pub exchanged_secs: u64,
    /// Refresh-token families, from login.
    pub refresh_secs: u64,
}

/// Issues tokens.
pub struct Issuer {
    issuer: String,
    keys: Arc<KeyRing>,
    lifetimes: Lifetimes,
    policies: Vec<ExchangePolicy>,
    /// Verifies our own tokens (subject tokens, introspection, revocation):
    /// our own keys, any of our audiences.
    own_tokens: Verifier,
    store: Arc<Store>,
    audit: AuditLog,
}

impl Issuer {
    /// Assemble the issuer.
    pub fn new(
        issuer: String,
        keys: Arc<KeyRing>,
        lifetimes: Lifetimes,
        policies: Vec<ExchangePolicy>,
        own_tokens: Verifier,
        store: Arc<Store>,
        audit: AuditLog,
    ) -> Self {
        Self { issuer, keys, lifetimes, policies, own_tokens, store, audit }
    }

    /// Verify one of our own tokens and check it was not revoked.
    async fn live_token(&self, token: &str) -> Result<Option<VerifiedToken>, OAuthError> {
        let Ok(verified) = self.own_tokens.verify(token).await else { return Ok(None) };
        let Some(jti) = verified.jti() else { return Ok(None) };
        let revoked = self.store.is_revoked(jti.as_str()).await.map_err(|error| {
            tracing::error!(%error, "revocation lookup failed");
            OAuthError::ServerError
        })?;
        if revoked || self.principal_revoked(&verified).await? {
            return Ok(None);
        }
        Ok(Some(verified))
    }

    /// Whether the token's subject, client or an actor was revoked after it
    /// was issued, or the key that signed it was.
    async fn principal_revoked(&self, token: &VerifiedToken) -> Result<bool, OAuthError> {
        let mut principals = vec![token.subject().as_str()];
        principals.extend(token.client_id().map(|c| c.as_str()));
        let mut actor = token.actor();
        while let Some(current) = actor {
            principals.push(current.sub().as_str());
            actor = current.previous();
        }
        let not_before = self.store.principals_not_before(&principals).await.map_err(|error| {
            tracing::error!(%error, "principal revocation lookup failed");
            OAuthError::ServerError
        })?;
        if not_before.is_some_and(|not_before| token.issued_at() <= not_before) {
            return Ok(true);
        }
        match token.key_id() {
            Some(kid) => self.store.signing_key_revoked(kid).await.map_err(|error| {
                tracing::error!(%error, "signing key revocation lookup failed");
                OAuthError::ServerError
            }),
            None => Ok(false),
        }
    }

    /// The revocation list as published at `/revocations` (identifiers hashed
    /// as [`estate_tokens::revocation::published_id`]).
    pub async fn revocation_list(&self) -> Result<Value, OAuthError> {
        let horizon = i64::try_from(self.lifetimes.access_secs.max(self.lifetimes.exchanged_secs)).unwrap_or(i64::MAX);
        let leeway = i64::try_from(estate_tokens::MAX_LEEWAY.as_secs()).unwrap_or(60);
        let list =
            self.store.revocations(unix_now(), horizon.saturating_add(leeway), leeway).await.map_err(|error| {
                tracing::error!(%error, "revocation list lookup failed");
                OAuthError::ServerError
            })?;
        let published = estate_tokens::revocation::published_id;
        Ok(json!({
            "tokens": list.tokens.iter().map(|jti| published(jti)).collect::<Vec<_>>(),
            "principals": list.principals.iter()
                .map(|(principal, not_before)| json!({ "id": published(principal), "not_before": not_before }))
                .collect::<Vec<_>>(),
            "keys": list.keys,
        }))
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
        self.audit
            .emit(AuditEvent::new(Action::TokenRevoked, Outcome::Success).client(client.id()).token_id(jti.as_str()));
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
        self.issue(client.id(), client.id(), audiences, scopes, self.lifetimes.access_secs, None, None)
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
        let ttl = self.lifetimes.exchanged_secs.min(remaining);
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
        let action = if claims.act.is_some() { Action::TokenExchanged } else { Action::TokenIssued };
        self.audit.emit(AuditEvent::new(action, Outcome::Success).user(sub).client(client_id).token_id(&claims.jti));
        Ok(TokenResponse {
            access_token,
            token_type: "Bearer",
            expires_in: ttl,
            scope: claims.scope,
            issued_token_type,
            refresh_token: None,
            id_token: None,
            jti: claims.jti,
        })
    }

    fn store_error(error: crate::store::StoreError) -> OAuthError {
        tracing::error!(%error, "token store failed");
        OAuthError::ServerError
    }

    /// `grant_type=authorization_code` (OAuth 2.1 §4.1.3): single-use code,
    /// same client, same redirect URI, PKCE S256. A second use of a code
    /// revokes what the first use issued (RFC 9700 §4.5).
    pub async fn authorization_code(&self, client: &Client, form: &FormParams) -> Result<TokenResponse, OAuthError> {
        if !client.may_use(GrantType::AuthorizationCode) {
            return Err(OAuthError::UnauthorizedClient("client may not use this grant"));
        }
        let code = form.single("code")?.ok_or(OAuthError::InvalidRequest("code missing"))?;
        let redirect_uri = form.single("redirect_uri")?.ok_or(OAuthError::InvalidRequest("redirect_uri missing"))?;
        let verifier = form.single("code_verifier")?.ok_or(OAuthError::InvalidRequest("code_verifier missing"))?;
        let code_hash = sha256(code.as_bytes());
        let record = match self.store.consume_code(&code_hash).await.map_err(Self::store_error)? {
            CodeUse::Fresh(record) => record,
            CodeUse::Unknown => return Err(OAuthError::InvalidGrant("invalid authorization code")),
            CodeUse::Replayed { issued_jti, refresh_family } => {
                if let Some(jti) = issued_jti {
                    let until = unix_now() + i64::try_from(self.lifetimes.access_secs).unwrap_or(300);
                    self.store.revoke(&jti, client.id(), until).await.map_err(Self::store_error)?;
                }
                if let Some(family) = refresh_family {
                    self.store.revoke_family(family).await.map_err(Self::store_error)?;
                }
                self.audit.emit(
                    AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
                        .reason("authorization_code_replayed")
                        .client(client.id()),
                );
                return Err(OAuthError::InvalidGrant("invalid authorization code"));
            }
        };
        if record.client_id != client.id() || record.redirect_uri != redirect_uri || record.expired {
            return Err(OAuthError::InvalidGrant("invalid authorization code"));
        }
        if !pkce_s256_matches(verifier, &record.code_challenge) {
            self.audit.emit(
                AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
                    .reason("pkce_failed")
                    .client(client.id()),
            );
            return Err(OAuthError::InvalidGrant("PKCE verification failed"));
        }
        let (scopes, _) = Scopes::parse(&record.scope);
        let mut response = self.issue(
            &record.subject,
            client.id(),
            record.audiences.clone(),
            scopes,
            self.lifetimes.access_secs,
            None,
            None,
        )?;
        let family = if client.may_use(GrantType::RefreshToken) {
            let family = uuid::Uuid::new_v4();
            let refresh = RefreshRecord {
                family,
                client_id: client.id().to_owned(),
                subject: record.subject.clone(),
                scope: record.scope.clone(),
                audiences: record.audiences.clone(),
                expires_at: unix_now() + i64::try_from(self.lifetimes.refresh_secs).unwrap_or(0),
                expired: false,
            };
            response.refresh_token = Some(self.new_refresh_token(&refresh).await?);
            Some(family)
        } else {
            None
        };
        if record.openid {
            response.id_token =
                Some(self.id_token(&record.subject, client.id(), record.auth_time, record.nonce.as_deref())?);
        }
        self.store.record_code_issue(&code_hash, &response.jti, family).await.map_err(Self::store_error)?;
        Ok(response)
    }

    /// `grant_type=refresh_token` with rotation: every use returns a new
    /// refresh token; presenting a used one revokes the whole family (RFC 9700 §4.14.2).
    pub async fn refresh(&self, client: &Client, form: &FormParams) -> Result<TokenResponse, OAuthError> {
        if !client.may_use(GrantType::RefreshToken) {
            return Err(OAuthError::UnauthorizedClient("client may not use this grant"));
        }
        let token = form.single("refresh_token")?.ok_or(OAuthError::InvalidRequest("refresh_token missing"))?;
        let record = match self.store.consume_refresh(&sha256(token.as_bytes())).await.map_err(Self::store_error)? {
            RefreshUse::Fresh(record) => record,
            RefreshUse::Unknown | RefreshUse::FamilyRevoked => {
                return Err(OAuthError::InvalidGrant("invalid refresh token"));
            }
            RefreshUse::Reused { family } => {
                self.store.revoke_family(family).await.map_err(Self::store_error)?;
                tracing::warn!(client_id = client.id(), family = %family, "refresh token reused; family revoked");
                self.audit.emit(
                    AuditEvent::new(Action::AuthenticationFailed, Outcome::Failure)
                        .reason("refresh_token_reused")
                        .client(client.id()),
                );
                return Err(OAuthError::InvalidGrant("invalid refresh token"));
            }
        };
        if record.client_id != client.id() {
            // Someone else's refresh token: treat it as stolen.
            self.store.revoke_family(record.family).await.map_err(Self::store_error)?;
            return Err(OAuthError::InvalidGrant("invalid refresh token"));
        }
        if record.expired {
            return Err(OAuthError::InvalidGrant("refresh token expired"));
        }
        if self.store.principal_disabled(&record.subject).await.map_err(Self::store_error)? {
            return Err(OAuthError::InvalidGrant("invalid refresh token"));
        }
        // A refresh may narrow scopes, never widen them.
        let (granted, _) = Scopes::parse(&record.scope);
        let scopes = requested_scopes(form, granted)?;
        let mut response = self.issue(
            &record.subject,
            client.id(),
            record.audiences.clone(),
            scopes,
            self.lifetimes.access_secs,
            None,
            None,
        )?;
        // Same family, same absolute end: rotation never extends a login.
        let next = RefreshRecord { scope: scopes.to_string(), ..record };
        response.refresh_token = Some(self.new_refresh_token(&next).await?);
        Ok(response)
    }

    async fn new_refresh_token(&self, record: &RefreshRecord) -> Result<String, OAuthError> {
        use aws_lc_rs::rand::SecureRandom;
        let mut bytes = [0u8; 32];
        aws_lc_rs::rand::SystemRandom::new().fill(&mut bytes).map_err(|_| OAuthError::ServerError)?;
        let token = URL_SAFE_NO_PAD.encode(bytes);
        self.store.insert_refresh(&sha256(token.as_bytes()), record).await.map_err(Self::store_error)?;
        Ok(token)
    }

    fn id_token(&self, sub: &str, client_id: &str, auth_time: i64, nonce: Option<&str>) -> Result<String, OAuthError> {
        let now = unix_now();
        let claims = IdTokenClaims {
            iss: &self.issuer,
            sub,
            aud: client_id,
            azp: client_id,
            exp: now + i64::try_from(self.lifetimes.access_secs).unwrap_or(300),
            iat: now,
            auth_time,
            nonce,
        };
        self.keys.sign_id_token(&claims).map_err(|error| {
            tracing::error!(%error, "signing failed");
            OAuthError::ServerError
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

/// RFC 7636 §4.6: BASE64URL(SHA256(code_verifier)) == code_challenge, where
/// the verifier is 43–128 unreserved characters.
fn pkce_s256_matches(verifier: &str, challenge: &str) -> bool {
    let well_formed = (43..=128).contains(&verifier.len())
        && verifier.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    let computed = URL_SAFE_NO_PAD.encode(sha256(verifier.as_bytes()));
    well_formed && bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
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
