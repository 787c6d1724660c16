//! Readiness of a token-verifying service: it can verify a token only once it
//! holds its issuer's signing keys. Fetched at start-up (retried in the
//! background when the issuer is not up yet) and kept through a later issuer
//! outage, so this gates a new instance's traffic and never takes a serving
//! one out of rotation.

use std::future::Future;
use std::pin::Pin;

use estate_service_kit::management::ReadinessCheck;

use crate::Verifier;

/// `/health/ready` fails until every verifier has keys.
pub struct KeysReady(pub Vec<Verifier>);

impl ReadinessCheck for KeysReady {
    fn name(&self) -> &'static str {
        "token_keys"
    }

    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        let ready = self.0.iter().all(Verifier::has_keys);
        Box::pin(async move { if ready { Ok(()) } else { Err("no signing keys from the issuer yet".to_owned()) } })
    }
}
