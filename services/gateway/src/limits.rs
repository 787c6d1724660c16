//! Rate limits by route class, per client IP, per subject and per OAuth
//! client (GCRA): in process by default; with `[service.redis]` every
//! gateway replica draws from one budget in Redis ([`crate::shared`]),
//! falling back to the in-process limits while Redis is unreachable.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};

/// `requests` per `per_secs` seconds (a burst of `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    /// Requests allowed per period (and as a burst).
    pub requests: u32,
    /// The period, seconds.
    pub per_secs: u64,
}

impl Rate {
    /// GCRA's emission interval: one request per this long.
    pub fn interval(self) -> Duration {
        Duration::from_secs(self.per_secs.max(1)) / self.requests.max(1)
    }
}

/// `[service.rate_classes.<name>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateClass {
    /// Per client IP (checked before the token is looked at).
    #[serde(default)]
    pub per_ip: Option<Rate>,
    /// Per token subject.
    #[serde(default)]
    pub per_subject: Option<Rate>,
    /// Per OAuth client.
    #[serde(default)]
    pub per_client: Option<Rate>,
}

/// Which budget a key draws from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dimension {
    /// Client IP.
    Ip,
    /// Token subject.
    Subject,
    /// OAuth client.
    Client,
}

impl Dimension {
    /// Label (metrics, audit reason, Redis key).
    pub fn as_str(self) -> &'static str {
        match self {
            Dimension::Ip => "ip",
            Dimension::Subject => "subject",
            Dimension::Client => "client",
        }
    }
}

/// In-process limiters, one keyed GCRA per (class, dimension).
pub struct LocalLimits {
    limiters: BTreeMap<(String, Dimension), DefaultKeyedRateLimiter<String>>,
}

/// The limits the gateway applies: shared when configured, local otherwise.
pub struct Limits {
    local: LocalLimits,
    rates: BTreeMap<(String, Dimension), Rate>,
    shared: Option<std::sync::Arc<crate::shared::SharedLimits>>,
}

impl Limits {
    /// From the classes; `shared` is the Redis budget, if configured.
    pub fn new(
        classes: &BTreeMap<String, RateClass>,
        shared: Option<std::sync::Arc<crate::shared::SharedLimits>>,
    ) -> Self {
        Self { local: LocalLimits::new(classes), rates: rates(classes).collect(), shared }
    }

    /// `Err(wait)` when `key` has no budget left in `class`/`dimension`.
    pub async fn check(&self, class: &str, dimension: Dimension, key: &str) -> Result<(), Duration> {
        let Some(rate) = self.rates.get(&(class.to_owned(), dimension)).copied() else { return Ok(()) };
        if let Some(shared) = &self.shared {
            let redis_key = format!("estate:rl:{class}:{}:{key}", dimension.as_str());
            match shared.check(&redis_key, rate).await {
                Ok(decision) => return decision,
                Err(error) => tracing::warn!(%error, "shared rate limit unavailable; using this replica's limits"),
            }
        }
        self.local.check(class, dimension, key)
    }
}

/// Every configured rate, keyed by (class, dimension).
fn rates(classes: &BTreeMap<String, RateClass>) -> impl Iterator<Item = ((String, Dimension), Rate)> + '_ {
    classes.iter().flat_map(|(name, class)| {
        [(Dimension::Ip, class.per_ip), (Dimension::Subject, class.per_subject), (Dimension::Client, class.per_client)]
            .into_iter()
            .filter_map(move |(dimension, rate)| rate.map(|rate| ((name.clone(), dimension), rate)))
    })
}

fn quota(rate: Rate) -> Quota {
    let burst = NonZeroU32::new(rate.requests.max(1)).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(rate.interval()).map_or_else(|| Quota::per_second(burst), |q| q.allow_burst(burst))
}

impl LocalLimits {
    /// Limiters for `classes`.
    pub fn new(classes: &BTreeMap<String, RateClass>) -> Self {
        Self { limiters: rates(classes).map(|(key, rate)| (key, RateLimiter::keyed(quota(rate)))).collect() }
    }

    /// `Err(wait)` when `key` has no budget left in `class`/`dimension`.
    pub fn check(&self, class: &str, dimension: Dimension, key: &str) -> Result<(), Duration> {
        let Some(limiter) = self.limiters.get(&(class.to_owned(), dimension)) else { return Ok(()) };
        limiter.check_key(&key.to_owned()).map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}
