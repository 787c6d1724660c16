//! Validated request bodies (OWASP API3, non-negotiable 5).
//!
//! [`Dto<T>`] is the only way a write endpoint takes a JSON body:
//!
//! 1. `Content-Type` must be `application/json` (else 415);
//! 2. the body must parse into `T` — which declares
//!    `#[serde(deny_unknown_fields)]`, so a client cannot slip in `status`,
//!    `price` or `customer_id` (else 400 `malformed-body`, with the *kind*
//!    of problem, never the parser's message or the value sent);
//! 3. `T::validate()` must pass (else 422 `invalid-body` listing each
//!    failing field's path and rule — validator's `params`, which echo the
//!    offending value, are never returned).
//!
//! The handler then converts the DTO into domain types (`TryFrom`), so
//! nothing unvalidated reaches storage. The body-size limit of the common
//! stack applies before any of this (413).

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use http::{StatusCode, header};
use serde::de::DeserializeOwned;
use validator::{Validate, ValidationErrors, ValidationErrorsKind};

use crate::problem::{FieldError, Problem};

/// Problem type of a body that is not the JSON this endpoint takes.
pub const MALFORMED_BODY: &str = "https://estate.dev/problems/malformed-body";
/// Problem type of a well-formed body that breaks a validation rule.
pub const INVALID_BODY: &str = "https://estate.dev/problems/invalid-body";

/// A JSON body that parsed strictly and passed validation.
#[derive(Debug, Clone)]
pub struct Dto<T>(pub T);

impl<S, T> FromRequest<S> for Dto<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Validate,
{
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !json {
            return Err(Problem::new(StatusCode::UNSUPPORTED_MEDIA_TYPE).with_detail("send application/json"));
        }
        // The body limit of the stack answers 413 here if the body is too big.
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            let status = rejection.status();
            Problem::new(status)
        })?;
        let value: T = serde_json::from_slice(&bytes).map_err(|error| {
            let detail = match error.classify() {
                serde_json::error::Category::Data => {
                    "the body does not have the fields this endpoint takes (unknown, missing or wrongly typed)"
                }
                serde_json::error::Category::Syntax | serde_json::error::Category::Eof => "the body is not valid JSON",
                serde_json::error::Category::Io => "the body could not be read",
            };
            Problem::typed(StatusCode::BAD_REQUEST, MALFORMED_BODY, "Malformed request body").with_detail(detail)
        })?;
        value.validate().map_err(|errors| {
            let mut fields = Vec::new();
            flatten(&errors, "", &mut fields);
            fields.sort_by(|a, b| a.field.cmp(&b.field).then_with(|| a.code.cmp(&b.code)));
            Problem::typed(StatusCode::UNPROCESSABLE_ENTITY, INVALID_BODY, "Invalid request body")
                .with_field_errors(fields)
        })?;
        Ok(Self(value))
    }
}

/// Field paths and rule codes only (never `params`, which hold the value).
fn flatten(errors: &ValidationErrors, prefix: &str, out: &mut Vec<FieldError>) {
    for (name, kind) in errors.errors() {
        let path = if prefix.is_empty() { name.to_string() } else { format!("{prefix}.{name}") };
        match kind {
            ValidationErrorsKind::Field(list) => {
                out.extend(list.iter().map(|e| FieldError { field: path.clone(), code: e.code.to_string() }));
            }
            ValidationErrorsKind::Struct(inner) => flatten(inner, &path, out),
            ValidationErrorsKind::List(items) => {
                for (index, inner) in items {
                    flatten(inner, &format!("{path}[{index}]"), out);
                }
            }
        }
    }
}
