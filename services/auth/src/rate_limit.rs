//! Token endpoint rate limits (PC-09): per claimed client id and per client
//! IP address, GCRA via `governor`. Checked before any signature or digest
//! work, so guessing secrets or flooding assertions is slowed cheaply. A
//! refusal is 429 with `Retry-After` and a `rate_limited` audit-style event.
//!
//! The limits are per process; several replicas multiply them (the gateway's
//! Redis-backed limiter is the shared budget in front).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::settings::RateLimitSettings;

/// The two budgets.
pub struct TokenRateLimits {
    per_client: DefaultKeyedRateLimiter<String>,
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

/// Which budget ran out, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Exceeded {
    /// `client` or `ip`.
    pub budget: &'static str,
    /// Seconds until a request would pass (at least 1).
    pub retry_after_secs: u64,
}

impl TokenRateLimits {
    /// Build from settings (a zero rate is treated as one per minute).
    pub fn new(settings: &RateLimitSettings) -> Arc<Self> {
        let quota = |per_minute: u32| Quota::per_minute(NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN));
        let limits = Arc::new(Self {
            per_client: RateLimiter::keyed(quota(settings.per_client_per_minute)),
            per_ip: RateLimiter::keyed(quota(settings.per_ip_per_minute)),
            clock: DefaultClock::default(),
        });
        // Forget idle keys now and then, so many distinct clients or IPs cannot grow memory without bound.
        let weak = Arc::downgrade(&limits);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(limits) = weak.upgrade() else { return };
                limits.per_client.retain_recent();
                limits.per_ip.retain_recent();
                limits.per_client.shrink_to_fit();
                limits.per_ip.shrink_to_fit();
            }
        });
        limits
    }

    /// Spend one request from each budget that applies.
    pub fn check(&self, client: Option<&str>, ip: Option<IpAddr>) -> Result<(), Exceeded> {
        let now = self.clock.now();
        let retry = |not_until: governor::NotUntil<_>| {
            let wait = not_until.wait_time_from(now);
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        };
        if let Some(ip) = ip {
            self.per_ip.check_key(&ip).map_err(|n| Exceeded { budget: "ip", retry_after_secs: retry(n).max(1) })?;
        }
        if let Some(client) = client {
            self.per_client
                .check_key(&client.to_owned())
                .map_err(|n| Exceeded { budget: "client", retry_after_secs: retry(n).max(1) })?;
        }
        Ok(())
    }
}
