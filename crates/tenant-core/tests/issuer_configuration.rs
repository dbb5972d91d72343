//! An issuer's configuration is fixed for its whole life: one registry, one
//! key set, one maximum lifetime, checked when it is built.

mod support;

use std::time::Duration;

use support::*;
use tenant_core::*;

fn key(id: &str, byte: u8) -> MasterKey {
    MasterKey::from_bytes(KeyId::new(id).unwrap(), [byte; 32])
}

#[test]
fn every_context_of_an_issuer_is_checked_against_the_registry_it_was_built_with() {
    let registry = Revocations::new();
    let issuer = ContextIssuer::builder(key("k1", 1))
        .revocations(registry.clone())
        .build()
        .unwrap();
    let early = root(&issuer);
    let clone = issuer.clone();
    let late = root(&clone);
    registry.revoke(&early);
    registry.revoke(&late);
    for ctx in [&early, &late] {
        assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
        assert!(matches!(
            issuer.authority().admit(ctx),
            Err(Error::ContextRevoked)
        ));
    }
    // Clones share the one registry: a revocation through either holds for
    // every context of the issuer.
    let third = root(&issuer);
    clone.revocations().revoke(&third);
    assert!(matches!(third.check(), Err(Error::ContextRevoked)));
    assert_eq!(registry.len(), 3);
}

#[test]
fn a_second_issuer_with_a_fresh_registry_cannot_launder_a_revoked_context() {
    // The registry swap: same master key, a new (empty) registry.
    let platform = ContextIssuer::new(key("k1", 1));
    let ctx = root(&platform);
    platform.revocations().revoke(&ctx);
    let twin = ContextIssuer::builder(key("k1", 1))
        .revocations(Revocations::new())
        .build()
        .unwrap();
    let laundered = twin.accept_token(ctx.to_token().as_str()).unwrap();
    laundered.check().unwrap(); // valid for the twin's own handles only ...
    assert!(matches!(
        platform.authority().admit(&laundered),
        Err(Error::ForeignAuthority)
    )); // ... never for the platform's.
    assert!(matches!(
        platform.accept_token(ctx.to_token().as_str()),
        Err(Error::ContextRevoked)
    ));
    // Nothing changed on the platform.
    assert_eq!(platform.revocations().len(), 1);
    assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
}

#[test]
fn max_ttl_out_of_range_is_a_configuration_error() {
    for bad in [
        Duration::ZERO,
        MAX_TTL_CEILING + Duration::from_secs(1),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ] {
        assert!(
            matches!(
                ContextIssuer::builder(key("k1", 1)).max_ttl(bad).build(),
                Err(Error::InvalidConfiguration(_))
            ),
            "{bad:?}"
        );
    }
    let issuer = ContextIssuer::builder(key("k1", 1))
        .max_ttl(MAX_TTL_CEILING)
        .build()
        .unwrap();
    assert_eq!(issuer.max_ttl(), MAX_TTL_CEILING);
    // The longest allowed lifetime is issued without overflow.
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .ttl(MAX_TTL_CEILING)
        .issue()
        .unwrap();
    ctx.check().unwrap();
}

#[test]
fn a_previous_key_with_a_clashing_id_is_a_configuration_error() {
    assert!(matches!(
        ContextIssuer::builder(key("k1", 1))
            .accept_previous(&key("k1", 2))
            .build(),
        Err(Error::InvalidConfiguration(_))
    ));
    assert!(matches!(
        ContextIssuer::builder(key("k2", 1))
            .accept_previous(&key("k1", 2))
            .accept_previous(&key("k1", 3))
            .build(),
        Err(Error::InvalidConfiguration(_))
    ));
}

#[test]
fn extreme_lifetimes_requested_from_an_issuer_are_typed_errors() {
    let issuer = issuer();
    let builder = || {
        issuer
            .context()
            .tenant(TenantId::random())
            .principal(principal())
    };
    for ttl in [Duration::ZERO, Duration::MAX, Duration::from_secs(u64::MAX)] {
        assert!(
            matches!(builder().ttl(ttl).issue(), Err(Error::InvalidTtl(_))),
            "{ttl:?}"
        );
    }
    let far = std::time::UNIX_EPOCH + Duration::from_secs(1 << 40);
    for at in [std::time::UNIX_EPOCH, far, std::time::SystemTime::now()] {
        assert!(
            matches!(builder().expires_at(at).issue(), Err(Error::InvalidTtl(_))),
            "{at:?}"
        );
    }
}
