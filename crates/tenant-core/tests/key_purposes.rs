//! Key purposes are domain-separated: no label, custom or not, derives
//! another purpose's key, and the key that mints contexts is not a purpose.

use tenant_core::*;

const BUILT_IN: [Purpose; 4] = [
    Purpose::Postgres,
    Purpose::PayloadSealing,
    Purpose::Vault,
    Purpose::CacheSalt,
];

/// Every label an attacker might pick to land on a built-in or internal key.
const HOSTILE_LABELS: [&str; 12] = [
    "postgres",
    "payload-sealing",
    "vault",
    "cache-salt",
    "context-proof",
    "context-token-signing",
    "tenant-data-keys",
    "built-in",
    "internal",
    "custom",
    "",
    "\0\0\0\x08built-in\0\0\0\x08postgres",
];

fn custom(label: &str) -> Purpose {
    Purpose::Custom(Box::leak(label.to_owned().into_boxed_str()))
}

fn master() -> MasterKey {
    MasterKey::from_bytes(KeyId::new("k1").unwrap(), [3; 32])
}

#[test]
fn a_custom_label_equal_to_a_built_in_label_derives_an_unrelated_subkey() {
    let issuer = ContextIssuer::new(master());
    for purpose in BUILT_IN {
        let built_in = issuer.subkey(purpose);
        let impostor = issuer.subkey(custom(purpose.label()));
        assert_ne!(
            built_in.expose_bytes(),
            impostor.expose_bytes(),
            "{purpose:?}"
        );
        // The built-in key is unchanged by the attempt.
        assert_eq!(
            built_in.expose_bytes(),
            master().subkey(purpose).expose_bytes()
        );
        assert_eq!(impostor.purpose(), custom(purpose.label()));
    }
}

#[test]
fn no_hostile_custom_label_collides_with_any_built_in_subkey() {
    let m = master();
    let built_in: Vec<[u8; 32]> = BUILT_IN
        .iter()
        .map(|p| *m.subkey(*p).expose_bytes())
        .collect();
    let mut seen = built_in.clone();
    for label in HOSTILE_LABELS {
        let key = *m.subkey(custom(label)).expose_bytes();
        assert!(!seen.contains(&key), "{label:?} collides");
        seen.push(key);
    }
}

#[test]
fn derivation_info_separates_classes_and_is_length_prefixed() {
    for purpose in BUILT_IN {
        assert_ne!(
            purpose.derivation_info(),
            custom(purpose.label()).derivation_info()
        );
    }
    // "ab"+"c" and "a"+"bc" style ambiguities cannot arise.
    assert_ne!(
        custom("built-in").derivation_info(),
        custom("").derivation_info()
    );
    let info = Purpose::Vault.derivation_info();
    assert_eq!(&info[..4], &8u32.to_be_bytes());
    assert_eq!(&info[4..12], b"built-in");
    assert_eq!(&info[12..16], &5u32.to_be_bytes());
    assert_eq!(&info[16..], b"vault");
}

#[test]
fn data_keys_of_a_custom_purpose_never_equal_a_built_in_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = FileKeyProvider::open(dir.path()).unwrap();
    let derived = DerivedKeyProvider::new(master());
    let tenant = TenantId::random();
    for provider in [&file as &dyn KeyProvider, &derived] {
        for purpose in BUILT_IN {
            let real = *provider.data_key(tenant, purpose).unwrap().expose_bytes();
            let fake = *provider
                .data_key(tenant, custom(purpose.label()))
                .unwrap()
                .expose_bytes();
            assert_ne!(real, fake, "{purpose:?}");
            assert_eq!(
                real,
                *provider.data_key(tenant, purpose).unwrap().expose_bytes()
            );
        }
    }
}

#[test]
fn the_root_of_derived_data_keys_is_no_subkey() {
    // `DerivedKeyProvider` keys are HKDF(root, tenant ‖ purpose). If any
    // subkey were that root, its holder could derive every tenant's keys.
    let provider = DerivedKeyProvider::new(master());
    let tenant = TenantId::random();
    let data_key = *provider
        .data_key(tenant, Purpose::Vault)
        .unwrap()
        .expose_bytes();
    for label in HOSTILE_LABELS {
        let sub = master().subkey(custom(label));
        let guess = sub.derive(&[tenant.as_bytes(), &Purpose::Vault.derivation_info()]);
        assert_ne!(*guess.expose_bytes(), data_key, "{label:?}");
    }
}
