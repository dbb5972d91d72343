//! Identifiers: tenants, principals, agents and contexts.
//!
//! Parsing is strict. A [`TenantId`] accepts only the canonical hyphenated
//! UUID form (36 characters) and never the nil UUID, so two spellings of one
//! tenant cannot exist and a forgotten default cannot name a tenant.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A tenant: one customer organisation of the platform.
///
/// ```
/// use tenant_core::TenantId;
/// let id: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse()?;
/// assert_eq!(id.to_string(), "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11");
/// assert!("6f1c1f4e8a4b4c3e9d6a0b7e3a2f5c11".parse::<TenantId>().is_err());
/// # Ok::<(), tenant_core::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Uuid);

impl TenantId {
    /// A fresh random tenant id (UUID v4).
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// Wraps a UUID; the nil UUID is rejected.
    pub fn from_uuid(uuid: Uuid) -> Result<Self> {
        if uuid.is_nil() {
            return Err(Error::InvalidId {
                kind: "tenant id",
                reason: "the nil UUID is not a tenant",
            });
        }
        Ok(Self(uuid))
    }

    /// The UUID inside.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }

    /// The 16 raw bytes (used in canonical encodings and derived ids).
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl FromStr for TenantId {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let uuid = parse_hyphenated_uuid(s, "tenant id")?;
        Self::from_uuid(uuid)
    }
}

/// Accepts only `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (hex, either case).
pub(crate) fn parse_hyphenated_uuid(s: &str, kind: &'static str) -> Result<Uuid> {
    let bytes = s.as_bytes();
    let well_formed = bytes.len() == 36
        && bytes.iter().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => *b == b'-',
            _ => b.is_ascii_hexdigit(),
        });
    if !well_formed {
        return Err(Error::InvalidId {
            kind,
            reason: "expected a hyphenated UUID (8-4-4-4-12 hex digits)",
        });
    }
    Uuid::try_parse(s).map_err(|_| Error::InvalidId {
        kind,
        reason: "expected a hyphenated UUID (8-4-4-4-12 hex digits)",
    })
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantId({})", self.0.hyphenated())
    }
}

/// Validates a bounded, printable name; shared by principals, agents and
/// capability names so that all of them encode unambiguously.
pub(crate) fn validate_name(
    s: &str,
    kind: &'static str,
    max_len: usize,
    allowed: fn(char) -> bool,
) -> Result<()> {
    if s.is_empty() {
        return Err(Error::InvalidId {
            kind,
            reason: "must not be empty",
        });
    }
    if s.len() > max_len {
        return Err(Error::InvalidId {
            kind,
            reason: "too long",
        });
    }
    if !s.chars().all(allowed) {
        return Err(Error::InvalidId {
            kind,
            reason: "contains a character that is not allowed",
        });
    }
    Ok(())
}

fn principal_char(c: char) -> bool {
    !c.is_control() && !c.is_whitespace()
}

fn agent_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Box<str>);

        impl $name {
            /// Parses and validates.
            pub fn new(s: impl AsRef<str>) -> Result<Self> {
                s.as_ref().parse()
            }

            /// The id as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                validate_name(s, $kind, $max, $allowed)?;
                Ok(Self(s.into()))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:?})"), &*self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// The human or service on whose behalf an agent acts (a JWT `sub`).
    ///
    /// 1–256 bytes, no whitespace or control characters.
    ///
    /// ```
    /// use tenant_core::PrincipalId;
    /// assert!(PrincipalId::new("user:alice@example.com").is_ok());
    /// assert!(PrincipalId::new("alice smith").is_err());
    /// ```
    PrincipalId,
    "principal id",
    256,
    principal_char
);

string_id!(
    /// An agent or sub-agent.
    ///
    /// 1–64 characters from `[A-Za-z0-9._:-]`.
    ///
    /// ```
    /// use tenant_core::AgentId;
    /// assert!(AgentId::new("researcher-1").is_ok());
    /// assert!(AgentId::new("../etc").is_err());
    /// ```
    AgentId,
    "agent id",
    64,
    agent_char
);

/// A unique id of one issued context (root or delegated); revocation is
/// keyed by it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId(Uuid);

impl ContextId {
    pub(crate) fn random() -> Self {
        Self(Uuid::new_v4())
    }

    pub(crate) fn from_bytes(b: [u8; 16]) -> Self {
        Self(Uuid::from_bytes(b))
    }

    /// The 16 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        self.0.as_bytes()
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl fmt::Debug for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContextId({})", self.0.hyphenated())
    }
}

impl Serialize for TenantId {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for TenantId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
