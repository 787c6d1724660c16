//! What token verification costs per request: a full check (signature +
//! claims) against a cache hit. Run with `cargo xtask bench tokens`.
//!
//! Figures are CPU time on one thread of this machine; compare the ratio, not
//! the absolute numbers, across machines.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used, reason = "a benchmark binary")]

use std::time::{Duration, Instant};

use estate_testkit::{IdpKey, TestIdp};
use estate_tokens::{Algorithm, Verifier, VerifierConfig};

const DISTINCT_TOKENS: usize = 3_000;
const CACHE_HITS: usize = 200_000;

async fn verifier(idp: &TestIdp, cache_ttl: Duration) -> Verifier {
    let mut config = VerifierConfig::new(idp.issuer(), &["order-api"]);
    config.ca_pem = Some(idp.ca_pem());
    config.algorithms = vec![Algorithm::ES256, Algorithm::EdDSA];
    config.cache_ttl = cache_ttl;
    Verifier::new(config).await.unwrap()
}

fn mint_many(idp: &TestIdp) -> Vec<String> {
    (0..DISTINCT_TOKENS)
        .map(|i| {
            let mut claims = idp.access_claims("alice", "order-api", "orders:read orders:write");
            claims["jti"] = serde_json::json!(format!("bench-{i}"));
            idp.mint(&claims).unwrap()
        })
        .collect()
}

async fn per_token(verifier: &Verifier, tokens: &[String]) -> Duration {
    let started = Instant::now();
    for token in tokens {
        verifier.verify(token).await.unwrap();
    }
    started.elapsed() / u32::try_from(tokens.len()).unwrap()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let idp = TestIdp::start().await.unwrap();
        let uncached = verifier(&idp, Duration::ZERO).await;
        let cached = verifier(&idp, Duration::from_secs(30)).await;

        let es256 = mint_many(&idp);
        idp.rotate_to(IdpKey::ed25519().unwrap());
        uncached.refresh_keys().await.unwrap();
        let eddsa = mint_many(&idp);

        // Warm up allocator and code paths.
        per_token(&uncached, &es256[..100]).await;
        let es256_full = per_token(&uncached, &es256).await;
        let eddsa_full = per_token(&uncached, &eddsa).await;

        let one = vec![es256[0].clone(); CACHE_HITS];
        cached.verify(&one[0]).await.unwrap();
        let hit = per_token(&cached, &one).await;

        println!("token verification, {DISTINCT_TOKENS} distinct tokens / {CACHE_HITS} cache hits, one thread:");
        println!("  ES256 full check (signature + claims): {:>8.2} µs/token", es256_full.as_secs_f64() * 1e6);
        println!("  EdDSA full check (signature + claims): {:>8.2} µs/token", eddsa_full.as_secs_f64() * 1e6);
        println!("  verified-token cache hit:              {:>8.2} µs/token", hit.as_secs_f64() * 1e6);
        println!("  ES256 full check / cache hit:          {:>8.1} x", es256_full.as_secs_f64() / hit.as_secs_f64());
    });
}
