//! Signing keys held in OpenBao, shared by every replica, rotated safely.
//!
//! The key set is one KV v2 secret (`kv/data/auth/signing-keys`, field
//! `keyset`): each key with its state. A rotation is three steps, each run by
//! an operator or a scheduled job (`auth keys rotate`), never guessed by a
//! replica on its own:
//!
//! 1. **publish** a new key as `next`: it appears in the JWKS but signs nothing,
//!    so every verifier can fetch it before it is needed;
//! 2. **activate** it once `publish_lead_secs` have passed (at least the JWKS
//!    `max-age`, so no verifier meets an unknown `kid`); the old key becomes
//!    `retiring`, still published, with `retire_after` = now + the longest
//!    token lifetime + skew;
//! 3. **retire**: keys past `retire_after` leave the JWKS. Every token they
//!    signed has expired by then.
//!
//! Replicas reload the set every `reload_secs` and swap it in without a
//! restart.
//!
//! A **compromised** key is not rotated but revoked (`auth keys revoke KID`,
//! [`revoke_key`]): it leaves the set at once — if it was signing, the
//! published `next` key (or a fresh one) signs from the next reload — and
//! the revocation list tells every verifier to refuse what it signed.

use std::sync::Arc;
use std::time::Duration;

use estate_secrets::OpenBao;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::keys::{KeyError, KeyRing, SigningKey};

/// Where the key set lives and how often replicas reload it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyStoreSettings {
    /// KV v2 mount.
    #[serde(default = "default_mount")]
    pub kv_mount: String,
    /// Path under the mount.
    #[serde(default = "default_path")]
    pub kv_path: String,
    /// Seconds between reloads.
    #[serde(default = "default_reload")]
    pub reload_secs: u64,
    /// Seconds a published key waits before it may sign (≥ JWKS max-age in production).
    #[serde(default = "default_lead")]
    pub publish_lead_secs: u64,
    /// Seconds a replaced key stays published (≥ access-token TTL + skew in production).
    #[serde(default = "default_retire")]
    pub retire_after_secs: u64,
}

fn default_mount() -> String {
    "kv".into()
}
fn default_path() -> String {
    "auth/signing-keys".into()
}
fn default_reload() -> u64 {
    30
}
fn default_lead() -> u64 {
    // JWKS max-age (300 s) plus a margin.
    360
}
fn default_retire() -> u64 {
    // Longest access-token TTL (300 s) plus skew (60 s).
    360
}

/// A key's place in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyState {
    /// Published, not signing yet.
    Next {
        /// When it was published.
        published_at: i64,
    },
    /// Signing.
    Active,
    /// Published until `retire_after`, signing nothing.
    Retiring {
        /// When it leaves the JWKS.
        retire_after: i64,
    },
}

/// One stored key (private: the whole set is a secret).
#[derive(Clone, Serialize, Deserialize)]
pub struct StoredKey {
    /// PKCS#8 PEM.
    pem: String,
    /// Its state.
    #[serde(flatten)]
    pub state: KeyState,
}

/// The stored key set.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct KeySet {
    /// Keys, in no particular order.
    pub keys: Vec<StoredKey>,
}

/// What one rotation step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationStep {
    /// An empty set got its first active key.
    Initialised,
    /// A new key was published as `next`.
    Published,
    /// `next` is not old enough yet; nothing changed (seconds to wait).
    Waiting(i64),
    /// `next` became active; the old one is retiring.
    Activated,
}

impl KeySet {
    /// Advance one step at time `now` (see the module docs). Retired keys are
    /// dropped on every step.
    pub fn advance(&mut self, now: i64, settings: &KeyStoreSettings) -> Result<RotationStep, KeyError> {
        self.keys.retain(|k| !matches!(k.state, KeyState::Retiring { retire_after } if retire_after <= now));
        if self.keys.is_empty() {
            self.keys.push(StoredKey { pem: generate_pem()?, state: KeyState::Active });
            return Ok(RotationStep::Initialised);
        }
        let lead = i64::try_from(settings.publish_lead_secs).unwrap_or(i64::MAX);
        let next = self.keys.iter().position(|k| matches!(k.state, KeyState::Next { .. }));
        match next {
            None => {
                self.keys.push(StoredKey { pem: generate_pem()?, state: KeyState::Next { published_at: now } });
                Ok(RotationStep::Published)
            }
            Some(i) => {
                let KeyState::Next { published_at } = self.keys[i].state else { return Err(KeyError::Invalid) };
                if now < published_at + lead {
                    return Ok(RotationStep::Waiting(published_at + lead - now));
                }
                let retire_after = now + i64::try_from(settings.retire_after_secs).unwrap_or(i64::MAX);
                for key in &mut self.keys {
                    if key.state == KeyState::Active {
                        key.state = KeyState::Retiring { retire_after };
                    }
                }
                self.keys[i].state = KeyState::Active;
                Ok(RotationStep::Activated)
            }
        }
    }

    /// Drop keys whose retirement time has come (replicas do this on reload,
    /// so a retired key leaves the JWKS even before the next rotation step).
    /// Remove the key `kid` at once (compromised). If it was the active key,
    /// the published `next` key takes over, or a new key when there is none.
    /// Returns the `kid` that signs from now on.
    pub fn revoke(&mut self, kid: &str) -> Result<String, KeyStoreError> {
        let kid_of = |key: &StoredKey| SigningKey::from_pem(key.pem.as_bytes()).map(|k| k.kid().to_owned());
        let mut position = None;
        for (i, key) in self.keys.iter().enumerate() {
            if kid_of(key)? == kid {
                position = Some(i);
            }
        }
        let Some(position) = position else { return Err(KeyStoreError::UnknownKey(kid.to_owned())) };
        let removed = self.keys.remove(position);
        if removed.state == KeyState::Active {
            match self.keys.iter_mut().find(|k| matches!(k.state, KeyState::Next { .. })) {
                Some(next) => next.state = KeyState::Active,
                None => self.keys.push(StoredKey { pem: generate_pem()?, state: KeyState::Active }),
            }
        }
        let active = self.keys.iter().find(|k| k.state == KeyState::Active).ok_or(KeyError::Invalid)?;
        Ok(kid_of(active)?)
    }

    fn without_retired(&self, now: i64) -> Vec<&StoredKey> {
        self.keys
            .iter()
            .filter(|k| !matches!(k.state, KeyState::Retiring { retire_after } if retire_after <= now))
            .collect()
    }

    /// The signing and published keys for a [`KeyRing`].
    pub fn to_ring_parts(&self, now: i64) -> Result<(SigningKey, Vec<SigningKey>), KeyError> {
        let live = self.without_retired(now);
        let active = live.iter().find(|k| k.state == KeyState::Active).ok_or(KeyError::Invalid)?;
        let published = live.iter().map(|k| SigningKey::from_pem(k.pem.as_bytes())).collect::<Result<_, _>>()?;
        Ok((SigningKey::from_pem(active.pem.as_bytes())?, published))
    }
}

fn generate_pem() -> Result<String, KeyError> {
    SigningKey::generate_pem()
}

/// Errors loading or saving the key set.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    /// OpenBao refused or failed.
    #[error(transparent)]
    OpenBao(#[from] estate_secrets::OpenBaoError),
    /// The stored set is not valid.
    #[error("stored key set is invalid: {0}")]
    Invalid(String),
    /// Key material is invalid.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No key with this `kid` in the set.
    #[error("no signing key {0:?} in the key set")]
    UnknownKey(String),
}

/// Read the key set (an absent secret is an empty set).
pub async fn load(openbao: &OpenBao, settings: &KeyStoreSettings) -> Result<KeySet, KeyStoreError> {
    match openbao.kv_field(&settings.kv_mount, &settings.kv_path, "keyset").await {
        Ok(text) => serde_json::from_str(text.expose_secret()).map_err(|e| KeyStoreError::Invalid(e.to_string())),
        Err(estate_secrets::OpenBaoError::NotFound { .. }) => Ok(KeySet::default()),
        Err(error) => Err(error.into()),
    }
}

/// Write the key set (a new KV version).
pub async fn save(openbao: &OpenBao, settings: &KeyStoreSettings, set: &KeySet) -> Result<(), KeyStoreError> {
    let text = SecretString::from(serde_json::to_string(set).map_err(|e| KeyStoreError::Invalid(e.to_string()))?);
    let mut fields = serde_json::Map::new();
    fields.insert("keyset".into(), serde_json::Value::String(text.expose_secret().to_owned()));
    openbao.kv_write(&settings.kv_mount, &settings.kv_path, &fields).await?;
    Ok(())
}

/// One rotation step, as the operator command runs it.
pub async fn rotate(
    openbao: &OpenBao,
    settings: &KeyStoreSettings,
    now: i64,
    audit: Option<&estate_audit::AuditLog>,
) -> Result<RotationStep, KeyStoreError> {
    let mut set = load(openbao, settings).await?;
    let step = set.advance(now, settings)?;
    if !matches!(step, RotationStep::Waiting(_)) {
        save(openbao, settings, &set).await?;
    }
    tracing::info!(step = ?step, "signing key rotation step");
    if let (Some(audit), false) = (audit, matches!(step, RotationStep::Waiting(_))) {
        let reason = match step {
            RotationStep::Initialised => "initialised",
            RotationStep::Published => "next_key_published",
            RotationStep::Activated => "next_key_activated",
            RotationStep::Waiting(_) => "waiting",
        };
        // The key the step is about: the newly published one, or the one now signing.
        let state =
            if step == RotationStep::Published { KeyState::Next { published_at: now } } else { KeyState::Active };
        let kid = set
            .keys
            .iter()
            .find(|k| k.state == state)
            .and_then(|k| SigningKey::from_pem(k.pem.as_bytes()).ok())
            .map(|k| k.kid().to_owned())
            .unwrap_or_default();
        audit.emit(
            estate_audit::AuditEvent::new(estate_audit::Action::KeyRotated, estate_audit::Outcome::Success)
                .reason(reason)
                .key_id(&kid),
        );
    }
    Ok(step)
}

/// Revoke the compromised key `kid` in the stored set (see
/// [`KeySet::revoke`]); the `kid` that signs from the next reload on. The
/// caller also records `kid` for the revocation list.
pub async fn revoke_key(
    openbao: &OpenBao,
    settings: &KeyStoreSettings,
    kid: &str,
    audit: Option<&estate_audit::AuditLog>,
) -> Result<String, KeyStoreError> {
    let mut set = load(openbao, settings).await?;
    let signing = set.revoke(kid)?;
    save(openbao, settings, &set).await?;
    tracing::warn!(revoked_kid = kid, active_kid = %signing, "signing key revoked");
    if let Some(audit) = audit {
        audit.emit(
            estate_audit::AuditEvent::new(estate_audit::Action::KeyRotated, estate_audit::Outcome::Success)
                .reason("key_revoked")
                .key_id(kid),
        );
    }
    Ok(signing)
}

/// Reload the set into `ring` (and the verifier of our own tokens) every
/// `reload_secs` until `ring` is dropped.
pub fn spawn_reloader(
    openbao: OpenBao,
    settings: KeyStoreSettings,
    ring: &Arc<KeyRing>,
    own_tokens: estate_tokens::Verifier,
) {
    let weak = Arc::downgrade(ring);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(settings.reload_secs.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(ring) = weak.upgrade() else { return };
            match load(&openbao, &settings).await.and_then(|set| Ok(set.to_ring_parts(crate::grants::unix_now())?)) {
                Ok((active, published)) => {
                    if ring.replace(active, published) {
                        tracing::info!(active_kid = %ring.active_kid(), "signing keys reloaded");
                        if let Err(error) = own_tokens.set_static_keys(ring.jwks()).await {
                            tracing::error!(%error, "cannot update the verifier of our own tokens");
                        }
                    }
                }
                Err(error) => tracing::warn!(%error, "reloading signing keys failed; keeping the current ones"),
            }
        }
    });
}

impl std::fmt::Debug for StoredKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredKey").field("state", &self.state).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(lead: u64, retire: u64) -> KeyStoreSettings {
        KeyStoreSettings {
            kv_mount: "kv".into(),
            kv_path: "p".into(),
            reload_secs: 1,
            publish_lead_secs: lead,
            retire_after_secs: retire,
        }
    }

    #[test]
    fn a_rotation_publishes_waits_activates_and_retires() {
        let s = settings(300, 360);
        let mut set = KeySet::default();
        assert_eq!(set.advance(1000, &s).unwrap(), RotationStep::Initialised);
        let first = set.to_ring_parts(1000).unwrap().0.kid().to_owned();

        assert_eq!(set.advance(1000, &s).unwrap(), RotationStep::Published);
        let (active, published) = set.to_ring_parts(1000).unwrap();
        assert_eq!(active.kid(), first, "the published key does not sign yet");
        assert_eq!(published.len(), 2);

        assert_eq!(set.advance(1100, &s).unwrap(), RotationStep::Waiting(200), "not before the lead time");
        assert_eq!(set.advance(1300, &s).unwrap(), RotationStep::Activated);
        let (active, published) = set.to_ring_parts(1300).unwrap();
        assert_ne!(active.kid(), first);
        assert!(published.iter().any(|k| k.kid() == first), "the old key stays published while tokens live");

        let (_, published) = set.to_ring_parts(1300 + 360).unwrap();
        assert!(!published.iter().any(|k| k.kid() == first), "retired from the JWKS after the last token expired");
    }

    #[test]
    fn revoking_the_active_key_promotes_next_or_makes_a_new_one_and_unknown_kids_are_errors() {
        let s = settings(0, 360);
        let mut set = KeySet::default();
        set.advance(1000, &s).unwrap();
        let first = set.to_ring_parts(1000).unwrap().0.kid().to_owned();
        set.advance(1000, &s).unwrap(); // publish next
        let next = set.to_ring_parts(1000).unwrap().1.iter().map(|k| k.kid().to_owned()).find(|k| *k != first).unwrap();
        assert_eq!(set.revoke(&first).unwrap(), next, "the published key takes over");
        let (active, published) = set.to_ring_parts(1000).unwrap();
        assert_eq!((active.kid(), published.len()), (next.as_str(), 1), "the revoked key is gone at once");
        let fresh = set.revoke(&next).unwrap();
        assert_ne!(fresh, next, "no next key: a new one is made");
        assert!(matches!(set.revoke("nope"), Err(KeyStoreError::UnknownKey(_))));
    }

    #[test]
    fn the_key_set_never_shows_key_material_in_debug() {
        let mut set = KeySet::default();
        set.advance(0, &settings(0, 0)).unwrap();
        assert!(!format!("{:?}", set.keys).contains("PRIVATE"));
    }
}
