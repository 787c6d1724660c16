//! OpenAPI helpers (feature `openapi`): the bearer security scheme every
//! REST service's document declares, and the route that serves a document
//! (on the management listener — see decision 0017).

use std::sync::Arc;

use axum::Json;

/// `modifiers(&BearerAuth)`: adds the `bearer` (JWT) security scheme that
/// operations reference with `security(("bearer" = ["scope"]))`.
pub struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build();
        openapi
            .components
            .get_or_insert_with(Default::default)
            .add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// A router serving `document` as JSON at `path`.
pub fn serve_document(path: &str, document: utoipa::openapi::OpenApi) -> axum::Router {
    let document = Arc::new(document);
    axum::Router::new().route(path, axum::routing::get(move || async move { Json(document.as_ref().clone()) }))
}
