//! Scopes as a closed enum (CONVENTIONS §6).
//!
//! A token's `scope` claim is a space-separated list (RFC 6749 §3.3). It is
//! parsed into a [`Scopes`] set of known [`Scope`]s; unknown values are
//! dropped (and counted, so a caller can log them) — never kept as strings and
//! never substring-matched: `orders:readwrite` does not grant `orders:read`.

use std::fmt;
use std::str::FromStr;

/// Every scope Estate knows. Adding one is a code change, reviewed like one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Scope {
    /// `orders:read`
    OrdersRead = 0,
    /// `orders:write`
    OrdersWrite = 1,
    /// `payments:authorize`
    PaymentsAuthorize = 2,
    /// `payments:refund`
    PaymentsRefund = 3,
    /// `inventory:read`
    InventoryRead = 4,
    /// `inventory:reserve`
    InventoryReserve = 5,
    /// `admin:*` — admin listeners only; a literal scope name, not a wildcard.
    Admin = 6,
}

impl Scope {
    /// All scopes, in declaration order.
    pub const ALL: [Scope; 7] = [
        Scope::OrdersRead,
        Scope::OrdersWrite,
        Scope::PaymentsAuthorize,
        Scope::PaymentsRefund,
        Scope::InventoryRead,
        Scope::InventoryReserve,
        Scope::Admin,
    ];

    /// The wire name, e.g. `orders:read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Scope::OrdersRead => "orders:read",
            Scope::OrdersWrite => "orders:write",
            Scope::PaymentsAuthorize => "payments:authorize",
            Scope::PaymentsRefund => "payments:refund",
            Scope::InventoryRead => "inventory:read",
            Scope::InventoryReserve => "inventory:reserve",
            Scope::Admin => "admin:*",
        }
    }

    const fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that names no known scope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scope")]
pub struct UnknownScope;

impl FromStr for Scope {
    type Err = UnknownScope;
    /// Exact, case-sensitive match (RFC 6749 §3.3: scope tokens are case-sensitive).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s).ok_or(UnknownScope)
    }
}

/// A set of known scopes.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Scopes(u16);

impl Scopes {
    /// No scopes.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// Parse a space-separated `scope` claim. Returns the known scopes and how
    /// many entries were not known scopes (ignored, for the caller to log).
    pub fn parse(claim: &str) -> (Self, usize) {
        let mut set = Self::empty();
        let mut unknown = 0;
        // RFC 6749 §3.3: separated by single spaces; be lenient about runs of them.
        for item in claim.split(' ').filter(|s| !s.is_empty()) {
            match item.parse::<Scope>() {
                Ok(scope) => set.insert(scope),
                Err(UnknownScope) => unknown += 1,
            }
        }
        (set, unknown)
    }

    /// Add a scope.
    pub fn insert(&mut self, scope: Scope) {
        self.0 |= scope.bit();
    }

    /// Whether the set holds `scope`.
    pub const fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// Whether every scope of `other` is in this set.
    pub const fn contains_all(self, other: Scopes) -> bool {
        self.0 & other.0 == other.0
    }

    /// The scopes in both sets.
    pub const fn intersection(self, other: Scopes) -> Scopes {
        Scopes(self.0 & other.0)
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scopes, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = Scope> {
        Scope::ALL.into_iter().filter(move |s| self.contains(*s))
    }
}

impl FromIterator<Scope> for Scopes {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        let mut set = Scopes::empty();
        for scope in iter {
            set.insert(scope);
        }
        set
    }
}

impl fmt::Display for Scopes {
    /// The space-separated claim form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in self.iter() {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl fmt::Debug for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scopes({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_scopes_and_counts_unknown_ones() {
        let (scopes, unknown) = Scopes::parse("orders:read  payments:refund openid");
        assert!(scopes.contains(Scope::OrdersRead));
        assert!(scopes.contains(Scope::PaymentsRefund));
        assert!(!scopes.contains(Scope::OrdersWrite));
        assert_eq!(unknown, 1);
        assert_eq!(scopes.to_string(), "orders:read payments:refund");
    }

    #[test]
    fn no_substring_or_case_or_prefix_matching() {
        for lookalike in [
            "orders:readwrite",
            "orders:rea",
            "xorders:read",
            "ORDERS:READ",
            "orders:*",
            "admin",
            "admin:users",
            "orders:read,orders:write",
            "orders:read\torders:write",
        ] {
            let (scopes, unknown) = Scopes::parse(lookalike);
            assert!(scopes.is_empty(), "{lookalike:?} granted {scopes:?}");
            assert_eq!(unknown, 1, "{lookalike:?}");
        }
    }

    #[test]
    fn set_algebra() {
        let ab: Scopes = [Scope::OrdersRead, Scope::OrdersWrite].into_iter().collect();
        let a: Scopes = [Scope::OrdersRead].into_iter().collect();
        assert!(ab.contains_all(a));
        assert!(!a.contains_all(ab));
        assert_eq!(ab.intersection(a), a);
        for scope in Scope::ALL {
            assert_eq!(scope.as_str().parse::<Scope>(), Ok(scope));
        }
    }
}
