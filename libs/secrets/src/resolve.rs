//! Resolving [`SecretRef`]s: `file:` locally (owner-only files), `openbao:`
//! through a logged-in [`OpenBao`] client (KV v2: `openbao:<mount>/data/<path>#<field>`
//! or the short form `openbao:<mount>/<path>#<field>`).

use estate_service_kit::SecretRef;
use secrecy::{ExposeSecret, SecretSlice, SecretString};

use crate::client::{OpenBao, OpenBaoError};

/// Resolve `reference`; `openbao` is needed only for `openbao:` references.
pub async fn resolve(reference: &SecretRef, openbao: Option<&OpenBao>) -> Result<SecretSlice<u8>, OpenBaoError> {
    match reference {
        SecretRef::File(_) => Ok(estate_service_kit::secret::resolve_local(reference)?),
        SecretRef::OpenBao { path, field } => {
            let client = openbao.ok_or_else(|| {
                OpenBaoError::Config(format!("{reference} needs an [openbao] section to be resolved"))
            })?;
            let (mount, rest) =
                path.split_once('/').ok_or_else(|| OpenBaoError::Config(format!("{reference}: no mount")))?;
            let rest = rest.strip_prefix("data/").unwrap_or(rest);
            let value: SecretString = client.kv_field(mount, rest, field).await?;
            Ok(SecretSlice::from(value.expose_secret().as_bytes().to_vec()))
        }
    }
}
