//! Asynchronous plug points: a key service behind a cache that hot paths
//! read without awaiting, a tier source behind a cache the issuer reads,
//! tiers from configuration files with errors naming the field.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tenant_core::*;

/// A key service that counts its calls and can be switched off.
struct Kms {
    calls: AtomicUsize,
    down: std::sync::atomic::AtomicBool,
    keys: DerivedKeyProvider,
}

impl Kms {
    fn new() -> Self {
        Self {
            calls: AtomicUsize::new(0),
            down: Default::default(),
            keys: DerivedKeyProvider::new(MasterKey::from_bytes(
                KeyId::new("kms").unwrap(),
                [9; 32],
            )),
        }
    }
}

#[async_trait::async_trait]
impl AsyncKeyProvider for Kms {
    async fn load_data_key(&self, tenant: TenantId, purpose: Purpose) -> Result<DataKey> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::task::yield_now().await;
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::KeyUnavailable {
                tenant,
                reason: "kms unreachable".into(),
                source: Some(std::io::Error::other("connection refused").into()),
            });
        }
        self.keys.data_key(tenant, purpose)
    }
}

#[tokio::test]
async fn a_key_cache_never_awaits_on_the_synchronous_path_and_loads_once() {
    let cache = KeyCache::new(Kms::new());
    let tenant = TenantId::random();

    let miss = cache.data_key(tenant, Purpose::PayloadSealing).unwrap_err();
    assert!(matches!(miss, Error::KeyUnavailable { tenant: t, .. } if t == tenant));
    assert_eq!(
        miss.status(),
        ErrorStatus::Unavailable { retry_after: None }
    );
    assert_eq!(cache.provider().calls.load(Ordering::SeqCst), 0);

    cache
        .load(tenant, &[Purpose::PayloadSealing, Purpose::Vault])
        .await
        .unwrap();
    cache
        .load(tenant, &[Purpose::PayloadSealing])
        .await
        .unwrap();
    assert_eq!(
        cache.provider().calls.load(Ordering::SeqCst),
        2,
        "fresh keys are not reloaded"
    );
    let sync = cache.data_key(tenant, Purpose::PayloadSealing).unwrap();
    let direct = cache
        .provider()
        .keys
        .data_key(tenant, Purpose::PayloadSealing)
        .unwrap();
    assert_eq!(sync.expose_bytes(), direct.expose_bytes());
    // Another tenant's key is another key, and still not loaded.
    assert!(cache
        .data_key(TenantId::random(), Purpose::PayloadSealing)
        .is_err());

    cache.forget(tenant);
    assert!(cache.data_key(tenant, Purpose::Vault).is_err());
}

#[tokio::test]
async fn a_failing_key_service_keeps_its_error_as_source_and_caches_nothing() {
    let cache = KeyCache::new(Kms::new());
    cache.provider().down.store(true, Ordering::SeqCst);
    let tenant = TenantId::random();
    let err = cache.get(tenant, Purpose::Vault).await.unwrap_err();
    assert!(err.retryable());
    let source = std::error::Error::source(&err).expect("the service's error is kept");
    assert_eq!(source.to_string(), "connection refused");
    assert!(cache.data_key(tenant, Purpose::Vault).is_err());
}

#[tokio::test]
async fn a_key_cache_is_bounded_and_reloads_stale_keys() {
    let cache = KeyCache::new(Kms::new()).capacity(2).ttl(Duration::ZERO);
    let tenants: Vec<_> = (0..3).map(|_| TenantId::random()).collect();
    for t in &tenants {
        cache.load(*t, &[Purpose::Vault]).await.unwrap();
    }
    let held = tenants
        .iter()
        .filter(|t| cache.data_key(**t, Purpose::Vault).is_ok())
        .count();
    assert_eq!(held, 2);
    assert!(
        cache.data_key(tenants[2], Purpose::Vault).is_ok(),
        "the newest key stays"
    );
    cache.load(tenants[2], &[Purpose::Vault]).await.unwrap();
    assert_eq!(
        cache.provider().calls.load(Ordering::SeqCst),
        4,
        "a stale key is reloaded"
    );
}

#[tokio::test]
async fn every_sync_key_provider_is_an_async_one() {
    let keys: Arc<dyn KeyProvider> = Arc::new(DerivedKeyProvider::new(MasterKey::generate(
        KeyId::new("d").unwrap(),
    )));
    let t = TenantId::random();
    let a = keys.load_data_key(t, Purpose::Vault).await.unwrap();
    let b = KeyProvider::data_key(&keys, t, Purpose::Vault).unwrap();
    assert_eq!(a.expose_bytes(), b.expose_bytes());
}

struct ControlPlane {
    silo: TenantId,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl AsyncTierResolver for ControlPlane {
    async fn resolve_tier(&self, tenant: TenantId) -> Result<IsolationTier> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Ok(if tenant == self.silo {
            IsolationTier::Silo
        } else {
            IsolationTier::Pool
        })
    }
}

#[tokio::test]
async fn the_issuer_reads_tiers_an_async_source_resolved() {
    let silo = TenantId::random();
    let tiers = TierCache::new(
        ControlPlane {
            silo,
            calls: AtomicUsize::new(0),
        },
        IsolationTier::Pool,
    );
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .tiers(tiers.clone())
        .build()
        .unwrap();
    let issue = |t| {
        issuer
            .context()
            .tenant(t)
            .principal(PrincipalId::new("p").unwrap())
            .issue()
            .unwrap()
    };
    assert_eq!(
        issue(silo).tier(),
        IsolationTier::Pool,
        "fallback before resolving"
    );
    assert_eq!(tiers.resolve(silo).await.unwrap(), IsolationTier::Silo);
    assert_eq!(tiers.resolve(silo).await.unwrap(), IsolationTier::Silo);
    assert_eq!(issue(silo).tier(), IsolationTier::Silo);
    assert_eq!(issuer.tier_of(silo), IsolationTier::Silo);

    tiers.set(silo, IsolationTier::Pool);
    assert_eq!(issue(silo).tier(), IsolationTier::Pool);
}

#[test]
fn tiers_load_from_json_and_toml_and_errors_name_the_field() {
    let silo: TenantId = "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11".parse().unwrap();
    let toml = r#"
        default = "pool"
        [tenants]
        "6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11" = "silo"
    "#;
    let tiers = StaticTiers::from(config::from_toml_str::<TiersConfig>(toml).unwrap());
    assert_eq!(tiers.tier(silo), IsolationTier::Silo);
    assert_eq!(tiers.tier(TenantId::random()), IsolationTier::Pool);

    let field = |r: Result<TiersConfig>| match r {
        Err(Error::Config { field, reason }) => (field, reason),
        other => panic!("{other:?}"),
    };
    let (f, _) = field(config::from_json_str(r#"{"default": "bridge"}"#));
    assert_eq!(f, "default");
    let (f, reason) = field(config::from_json_str(
        r#"{"default": "pool", "tenants": {"acme": "silo"}}"#,
    ));
    assert_eq!(f, "tenants.acme");
    assert!(reason.contains("tenant"), "{reason}");
    let (f, _) = field(config::from_json_str(
        r#"{"default": "pool", "tenants": {"6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11": "gold"}}"#,
    ));
    assert_eq!(f, "tenants.6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11");
    let (f, reason) = field(config::from_toml_str(
        r#"default = "pool"
        tier_for_everyone = "silo""#,
    ));
    assert_eq!(f, "tier_for_everyone");
    assert!(reason.contains("unknown field"), "{reason}");
    let (f, _) = field(config::from_toml_str("default = "));
    assert_eq!(f, "", "a syntax error has no field");
}

#[test]
fn errors_classify_for_callers() {
    use ErrorStatus::*;
    let cases: Vec<(Error, ErrorStatus, &str)> = vec![
        (Error::ContextExpired, Unauthenticated, "context_expired"),
        (
            Error::ForeignAuthority,
            Unauthenticated,
            "foreign_authority",
        ),
        (
            ClaimRejection::BadSignature.into(),
            Unauthenticated,
            "bad_signature",
        ),
        (Error::NotDescendant, PermissionDenied, "not_descendant"),
        (
            Error::Widening {
                capability: "tools",
            },
            PermissionDenied,
            "widening",
        ),
        (
            Error::RevocationsStale,
            Unavailable { retry_after: None },
            "revocations_stale",
        ),
        (Error::InvalidTtl("zero"), InvalidInput, "invalid_ttl"),
        (
            Error::InvalidConfiguration("x".into()),
            Internal,
            "invalid_configuration",
        ),
    ];
    for (e, status, kind) in cases {
        assert_eq!((e.status(), e.kind()), (status, kind), "{e}");
        assert_eq!(e.retryable(), matches!(status, Unavailable { .. }), "{e}");
    }
}
