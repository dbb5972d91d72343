//! Per-tenant data keys.

use tenant_core::*;

#[test]
fn file_key_provider_persists_keys_and_separates_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TenantId::random(), TenantId::random());
    let first = FileKeyProvider::open(dir.path()).unwrap();
    let ka = *first.data_key(a, Purpose::Vault).unwrap().expose_bytes();
    let kb = *first.data_key(b, Purpose::Vault).unwrap().expose_bytes();
    assert_ne!(ka, kb);
    assert_ne!(
        ka,
        *first
            .data_key(a, Purpose::PayloadSealing)
            .unwrap()
            .expose_bytes()
    );

    // A second provider (another process, after a restart) sees the same key.
    let second = FileKeyProvider::open(dir.path()).unwrap();
    assert_eq!(
        ka,
        *second.data_key(a, Purpose::Vault).unwrap().expose_bytes()
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(format!("{a}.key")))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn destroying_a_tenant_key_shreds_it() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::random();
    let keys = FileKeyProvider::open(dir.path()).unwrap();
    let before = *keys.data_key(t, Purpose::Vault).unwrap().expose_bytes();
    keys.destroy(t).unwrap();
    let after = *keys.data_key(t, Purpose::Vault).unwrap().expose_bytes();
    assert_ne!(before, after);
}

#[test]
fn corrupt_key_file_is_an_error_not_a_new_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::random();
    std::fs::write(dir.path().join(format!("{t}.key")), b"short").unwrap();
    let keys = FileKeyProvider::open(dir.path()).unwrap();
    assert!(matches!(
        keys.data_key(t, Purpose::Vault),
        Err(Error::Key(_))
    ));
}

#[test]
fn concurrent_first_use_yields_one_key() {
    let dir = tempfile::tempdir().unwrap();
    let t = TenantId::random();
    let keys: Vec<[u8; 32]> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let path = dir.path().to_path_buf();
                s.spawn(move || {
                    let p = FileKeyProvider::open(path).unwrap();
                    *p.data_key(t, Purpose::Vault).unwrap().expose_bytes()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(keys.windows(2).all(|w| w[0] == w[1]));
}

#[test]
fn tier_resolver_accepts_closures() {
    let silo = TenantId::random();
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .tiers(move |t: TenantId| {
            if t == silo {
                IsolationTier::Silo
            } else {
                IsolationTier::Pool
            }
        })
        .build()
        .unwrap();
    let ctx = issuer
        .context()
        .tenant(silo)
        .principal(PrincipalId::new("p").unwrap())
        .issue()
        .unwrap();
    assert_eq!(ctx.tier(), IsolationTier::Silo);
    assert_eq!(issuer.tier_of(TenantId::random()), IsolationTier::Pool);
}
