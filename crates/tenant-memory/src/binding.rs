//! The signed tenant context bound to a PostgreSQL transaction.
//!
//! The value of the transaction-local setting [`SETTING`] is
//!
//! ```text
//! <mac: 64 hex> v2 <tenant uuid> <expiry: unix ms, 15 digits> <key id> <grant>...
//! mac = HMAC-SHA256(postgres subkey, "tenant_sdk/pg-ctx/v2|" || everything after "<mac> ")
//! ```
//!
//! Each grant is a scope key rows carry (migration 0002): `tenant␟namespace␟`
//! and `tenant␟namespace␟principal` for every memory namespace the context
//! may use (`tenant␟␟…` when it may use every namespace), so a context sees
//! rows shared tenant-wide and its own principal's private rows, in its
//! namespaces only. `␟` is U+001F; namespaces and principals contain neither
//! whitespace nor control characters, so the encoding is unambiguous. The
//! owner-side erasure and export bind the bare tenant, which every row of
//! the tenant carries.
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
pub(crate) const MAC_DOMAIN: &str = "tenant_sdk/pg-ctx/v2|";

/// Separates the parts of a scope key (U+001F, "unit separator").
const UNIT: char = '\u{1f}';

/// The PostgreSQL subkey with its key id (cheap to clone, never printed).
#[derive(Clone)]
pub(crate) struct PostgresKey {
    key_id: Arc<str>,
    secret: Arc<SecretBox<[u8; 32]>>,
}

/// Which rows of its tenant a binding admits.
pub(crate) enum Reach<'a> {
    /// What a context may touch: its namespaces, shared rows and its own
    /// principal's private rows.
    Context(&'a TenantContext),
    /// Every row of the tenant (owner-side erasure and export).
    WholeTenant,
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

    /// The HMAC pads the database stores instead of the key: the inner pad
    /// followed by the domain prefix, and the outer pad.
    pub(crate) fn pads(&self) -> (Vec<u8>, [u8; 64]) {
        let mut inner = [0x36u8; 64];
        let mut outer = [0x5cu8; 64];
        for (i, byte) in self.secret.expose_secret().iter().enumerate() {
            inner[i] ^= byte;
            outer[i] ^= byte;
        }
        let mut prefix = inner.to_vec();
        prefix.extend_from_slice(MAC_DOMAIN.as_bytes());
        (prefix, outer)
    }

    /// The value to bind for `tenant` with `grants`, valid until
    /// `expires_at_ms`.
    pub(crate) fn sign(
        &self,
        tenant: TenantId,
        expires_at_ms: u64,
        grants: &[String],
    ) -> BoundContext {
        let mut body = format!("v2 {tenant} {expires_at_ms:015} {}", self.key_id);
        for grant in grants {
            body.push(' ');
            body.push_str(grant);
        }
        let mut mac = match Hmac::<Sha256>::new_from_slice(self.secret.expose_secret()) {
            Ok(mac) => mac,
            // HMAC accepts keys of any length; 32 bytes cannot fail.
            Err(_) => unreachable_hmac(),
        };
        mac.update(MAC_DOMAIN.as_bytes());
        mac.update(body.as_bytes());
        let tag = hex::encode(mac.finalize().into_bytes());
        BoundContext(format!("{tag} {body}").into())
    }

    /// The value to bind for `ctx`, expiring with it, reaching `reach`.
    pub(crate) fn sign_context(&self, ctx: &TenantContext, reach: Reach<'_>) -> BoundContext {
        let tenant = ctx.tenant();
        self.sign(tenant, ctx.expires_at_unix_ms(), &grants(tenant, reach))
    }
}

/// The scope keys a binding grants.
fn grants(tenant: TenantId, reach: Reach<'_>) -> Vec<String> {
    let ctx = match reach {
        Reach::WholeTenant => return vec![tenant.to_string()],
        Reach::Context(ctx) => ctx,
    };
    let principal = ctx.principal().as_str();
    let mut keys = Vec::new();
    let mut grant = |namespace: &str| {
        keys.push(format!("{tenant}{UNIT}{namespace}{UNIT}"));
        keys.push(format!("{tenant}{UNIT}{namespace}{UNIT}{principal}"));
    };
    match ctx.capabilities().memory_namespaces().names() {
        None => grant(""),
        Some(names) => names.for_each(&mut grant),
    }
    keys
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

/// A signed context value, ready to bind. `Debug` hides it.
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
    use tenant_core::{Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId};

    fn master() -> MasterKey {
        MasterKey::from_bytes(KeyId::new("k1").unwrap(), [7; 32])
    }

    fn key() -> PostgresKey {
        PostgresKey::from_subkey(&master().subkey(Purpose::Postgres)).unwrap()
    }

    #[test]
    fn the_fixed_fields_sit_where_the_database_reads_them() {
        let tenant: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse().unwrap();
        let bound = key().sign(tenant, 1_700_000_000_000, &["g1".into(), "g2".into()]);
        let s = bound.as_str();
        assert_eq!(&s[64..68], " v2 ");
        assert_eq!(&s[68..104], tenant.to_string());
        assert_eq!(&s[105..120], "001700000000000");
        assert_eq!(&s[121..], "k1 g1 g2");
        assert!(s[..64].bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn grants_name_each_namespace_shared_and_private() {
        let issuer = ContextIssuer::new(master());
        let ctx = issuer
            .context()
            .tenant(TenantId::random())
            .principal(PrincipalId::new("bob").unwrap())
            .capabilities(
                Capabilities::none()
                    .with_memory_namespaces(["a", "b"])
                    .unwrap(),
            )
            .issue()
            .unwrap();
        let t = ctx.tenant();
        assert_eq!(
            grants(t, Reach::Context(&ctx)),
            [
                format!("{t}\u{1f}a\u{1f}"),
                format!("{t}\u{1f}a\u{1f}bob"),
                format!("{t}\u{1f}b\u{1f}"),
                format!("{t}\u{1f}b\u{1f}bob"),
            ]
        );
        assert_eq!(grants(t, Reach::WholeTenant), [t.to_string()]);
    }

    #[test]
    fn pads_give_the_same_mac_as_the_key() {
        use sha2::Digest;
        let k = key();
        let tenant = TenantId::random();
        let bound = k.sign(tenant, 1, &[]);
        let (inner, outer) = k.pads();
        let body = &bound.as_str()[65..];
        let mut h = Sha256::new();
        h.update(&inner);
        h.update(body.as_bytes());
        let inner_hash = h.finalize();
        let mut h = Sha256::new();
        h.update(outer);
        h.update(inner_hash);
        assert_eq!(hex::encode(h.finalize()), bound.as_str()[..64]);
    }

    #[test]
    fn only_the_postgres_subkey_is_accepted() {
        let err = PostgresKey::from_subkey(&master().subkey(Purpose::Vault)).unwrap_err();
        assert!(matches!(err, Error::WrongKeyPurpose(Purpose::Vault)));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let shown = format!("{:?}", key());
        assert!(shown.contains("k1") && !shown.contains("secret"));
    }
}
