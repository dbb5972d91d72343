//! The signed tenant context bound to a PostgreSQL transaction.
//!
//! The value of the transaction-local setting [`SETTING`] is
//! `v1:<key id>:<tenant uuid>:<expiry unix ms>:<hex mac>` with
//! `mac = HMAC-SHA256(postgres subkey, "tenant_sdk/pg-ctx/v1|<key id>|<tenant>|<expiry>")`.
//! The policies' view `tenant_sdk.verified_context` (migration 0005) and
//! `tenant_sdk.current_tenant()` (migrations 0001/0004) recompute the MAC
//! with pgcrypto from a key the application role cannot read.
//!
//! The value is only ever sent as a bind parameter (`$1`), never inlined in
//! SQL text: other sessions of the same role can read each other's query
//! text in `pg_stat_activity`, but not their parameters.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use tenant_core::{Purpose, Subkey, TenantContext, TenantId};

use crate::error::{Error, Result};

/// The setting the signed context is bound to, transaction-locally.
pub const SETTING: &str = "tenant_sdk.ctx";

/// Domain separation for the MAC; must match migration 0001.
const MAC_DOMAIN: &str = "tenant_sdk/pg-ctx/v1";

/// The PostgreSQL subkey with its key id (cheap to clone, never printed).
#[derive(Clone)]
pub(crate) struct PostgresKey {
    key_id: Arc<str>,
    secret: Arc<SecretBox<[u8; 32]>>,
}

impl PostgresKey {
    pub(crate) fn from_subkey(subkey: &Subkey) -> Result<Self> {
        if subkey.purpose() != Purpose::Postgres {
            return Err(Error::WrongKeyPurpose(subkey.purpose()));
        }
        Ok(Self {
            key_id: subkey.key_id().as_str().into(),
            secret: Arc::new(SecretBox::new(Box::new(*subkey.expose_bytes()))),
        })
    }

    pub(crate) fn key_id(&self) -> &str {
        &self.key_id
    }

    pub(crate) fn secret(&self) -> &[u8; 32] {
        self.secret.expose_secret()
    }

    /// The value to bind for `tenant`, valid until `expires_at_ms`.
    pub(crate) fn sign(&self, tenant: TenantId, expires_at_ms: u64) -> BoundContext {
        let body = format!("{}|{tenant}|{expires_at_ms}", self.key_id);
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.secret()) {
            Ok(mac) => mac,
            // HMAC accepts keys of any length; 32 bytes cannot fail.
            Err(_) => unreachable_hmac(),
        };
        mac.update(MAC_DOMAIN.as_bytes());
        mac.update(b"|");
        mac.update(body.as_bytes());
        let tag = hex::encode(mac.finalize().into_bytes());
        BoundContext(format!("v1:{}:{tenant}:{expires_at_ms}:{tag}", self.key_id).into())
    }

    /// The value to bind for `ctx`, expiring with it.
    pub(crate) fn sign_context(&self, ctx: &TenantContext) -> BoundContext {
        self.sign(ctx.tenant(), ctx.expires_at_unix_ms())
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    unreachable!("HMAC-SHA256 accepts keys of every length")
}

impl fmt::Debug for PostgresKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A signed context value, ready to bind. `Debug` hides the MAC.
#[derive(Clone)]
pub(crate) struct BoundContext(Arc<str>);

impl BoundContext {
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BoundContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BoundContext(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tenant_core::{KeyId, MasterKey};

    fn key() -> PostgresKey {
        let master = MasterKey::from_bytes(KeyId::new("k1").unwrap(), [7; 32]);
        PostgresKey::from_subkey(&master.subkey(Purpose::Postgres)).unwrap()
    }

    #[test]
    fn signed_value_has_five_colon_separated_parts() {
        let tenant: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse().unwrap();
        let bound = key().sign(tenant, 1_700_000_000_000);
        let parts: Vec<&str> = bound.as_str().split(':').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(
            parts[..4],
            ["v1", "k1", &tenant.to_string(), "1700000000000"]
        );
        assert_eq!(parts[4].len(), 64);
    }

    #[test]
    fn only_the_postgres_subkey_is_accepted() {
        let master = MasterKey::from_bytes(KeyId::new("k1").unwrap(), [7; 32]);
        let err = PostgresKey::from_subkey(&master.subkey(Purpose::Vault)).unwrap_err();
        assert!(matches!(err, Error::WrongKeyPurpose(Purpose::Vault)));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let shown = format!("{:?}", key());
        assert!(shown.contains("k1") && !shown.contains("secret"));
    }
}
