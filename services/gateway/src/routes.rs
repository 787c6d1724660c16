//! The route table: the only requests the gateway forwards. Each entry names
//! a path pattern (`/v1/orders/{id}`: a `{…}` segment matches exactly one
//! non-empty segment), its methods, the upstream, the scope a token must
//! hold, a rate-limit class and a body limit. Anything else is 404: the
//! gateway is never an open proxy (OWASP API9).

use estate_tokens::Scope;
use http::Method;
use serde::{Deserialize, Serialize};

/// `[[service.routes]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSettings {
    /// Path pattern, e.g. `/v1/orders/{id}/cancel`.
    pub path: String,
    /// Methods served.
    pub methods: Vec<String>,
    /// Upstream name (`[[service.upstreams]]`).
    pub upstream: String,
    /// Scope the token must hold.
    pub scope: String,
    /// Rate-limit class (`[service.rate_classes.<name>]`).
    #[serde(default = "default_class")]
    pub class: String,
    /// Largest request body, bytes (default 64 KiB).
    #[serde(default = "default_body_limit")]
    pub body_limit: usize,
}

/// The rate class of routes that name none — and of requests that match no route.
pub const DEFAULT_CLASS: &str = "default";

fn default_class() -> String {
    DEFAULT_CLASS.into()
}

fn default_body_limit() -> usize {
    64 * 1024
}

/// Invalid route table.
#[derive(Debug, thiserror::Error)]
#[error("route table: {0}")]
pub struct RouteError(pub String);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Param,
}

/// One compiled route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The pattern as written (metrics label; never the concrete path).
    pub pattern: String,
    segments: Vec<Segment>,
    methods: Vec<Method>,
    /// Index of the upstream.
    pub upstream: usize,
    /// Required scope.
    pub scope: Scope,
    /// Rate-limit class.
    pub class: String,
    /// Body limit.
    pub body_limit: usize,
}

/// The compiled table.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

/// What a lookup found.
pub enum Lookup<'a> {
    /// A route for this method and path.
    Found(&'a Route),
    /// The path is routed, not with this method (the methods it has).
    OtherMethods(Vec<Method>),
    /// Nothing.
    NotFound,
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').skip(1)
}

impl RouteTable {
    /// Compile `routes`; `upstream_index` maps a name to its index.
    pub fn new(routes: &[RouteSettings], upstream_index: impl Fn(&str) -> Option<usize>) -> Result<Self, RouteError> {
        let mut compiled = Vec::new();
        for route in routes {
            if !route.path.starts_with('/') || route.path.contains("//") || route.path.contains("..") {
                return Err(RouteError(format!("path {:?}", route.path)));
            }
            let segments = split(&route.path)
                .map(|s| {
                    if s.starts_with('{') && s.ends_with('}') && s.len() > 2 {
                        Ok(Segment::Param)
                    } else if !s.is_empty() && !s.contains(['{', '}', '*', '?', '#', '%']) {
                        Ok(Segment::Literal(s.to_owned()))
                    } else {
                        Err(RouteError(format!("segment {s:?} of {:?}", route.path)))
                    }
                })
                .collect::<Result<Vec<_>, _>>()?;
            let methods = route
                .methods
                .iter()
                .map(|m| m.parse::<Method>().map_err(|_| RouteError(format!("method {m:?}"))))
                .collect::<Result<Vec<_>, _>>()?;
            let upstream =
                upstream_index(&route.upstream).ok_or_else(|| RouteError(format!("upstream {:?}", route.upstream)))?;
            let scope = route.scope.parse().map_err(|_| RouteError(format!("scope {:?}", route.scope)))?;
            compiled.push(Route {
                pattern: route.path.clone(),
                segments,
                methods,
                upstream,
                scope,
                class: route.class.clone(),
                body_limit: route.body_limit,
            });
        }
        Ok(Self { routes: compiled })
    }

    /// Every route, for meta-checks.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The route for `method` and `path` (already percent-decoded? no: the
    /// raw path; an encoded slash or dot stays one opaque segment).
    pub fn lookup(&self, method: &Method, path: &str) -> Lookup<'_> {
        let requested: Vec<&str> = split(path).collect();
        let mut other = Vec::new();
        for route in &self.routes {
            let matches = route.segments.len() == requested.len()
                && route.segments.iter().zip(&requested).all(|(segment, got)| match segment {
                    Segment::Literal(literal) => literal == got,
                    Segment::Param => !got.is_empty() && *got != "." && *got != "..",
                });
            if !matches {
                continue;
            }
            if route.methods.contains(method) {
                return Lookup::Found(route);
            }
            other.extend(route.methods.iter().cloned());
        }
        if other.is_empty() { Lookup::NotFound } else { Lookup::OtherMethods(other) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let route = |path: &str, methods: &[&str], scope: &str| RouteSettings {
            path: path.into(),
            methods: methods.iter().map(|m| (*m).to_owned()).collect(),
            upstream: "order".into(),
            scope: scope.into(),
            class: default_class(),
            body_limit: default_body_limit(),
        };
        RouteTable::new(
            &[route("/v1/orders", &["GET"], "orders:read"), route("/v1/orders/{id}", &["GET", "PATCH"], "orders:read")],
            |name| (name == "order").then_some(0),
        )
        .unwrap()
    }

    #[test]
    fn api9_only_listed_paths_and_methods_match() {
        let table = table();
        assert!(matches!(table.lookup(&Method::GET, "/v1/orders"), Lookup::Found(r) if r.pattern == "/v1/orders"));
        assert!(
            matches!(table.lookup(&Method::GET, "/v1/orders/abc"), Lookup::Found(r) if r.pattern == "/v1/orders/{id}")
        );
        assert!(matches!(table.lookup(&Method::DELETE, "/v1/orders/abc"), Lookup::OtherMethods(_)));
        for path in [
            "/v1/orders/",
            "/v1/orders/a/b",
            "/v1/orders/..",
            "/v1/orders/.",
            "/v1/order",
            "/",
            "/admin/v1/checkout",
            "/v1//orders",
        ] {
            assert!(matches!(table.lookup(&Method::GET, path), Lookup::NotFound), "{path}");
        }
    }

    #[test]
    fn a_bad_table_does_not_load() {
        let bad = |path: &str, upstream: &str, scope: &str| RouteSettings {
            path: path.into(),
            methods: vec!["GET".into()],
            upstream: upstream.into(),
            scope: scope.into(),
            class: default_class(),
            body_limit: 1,
        };
        let index = |name: &str| (name == "order").then_some(0);
        assert!(RouteTable::new(&[bad("/v1/*", "order", "orders:read")], index).is_err());
        assert!(RouteTable::new(&[bad("v1/orders", "order", "orders:read")], index).is_err());
        assert!(RouteTable::new(&[bad("/v1/orders", "nowhere", "orders:read")], index).is_err());
        assert!(RouteTable::new(&[bad("/v1/orders", "order", "orders:all")], index).is_err());
    }
}
