//! ModelGate: entitlements, maximum context, cache salt, usage events.

mod support;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use support::*;
use tenant_core::*;
use tenant_governance::Error;
use tenant_governance::*;

struct Collect(Mutex<Vec<UsageEvent>>);

impl UsageSink for Collect {
    fn record(&self, event: &UsageEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}

fn gate(issuer: &ContextIssuer, ctx: &TenantContext, policy: Policy) -> ModelGate {
    ModelGate::builder(&issuer.authority())
        .policy(policy)
        .salt_key(issuer.subkey(Purpose::CacheSalt))
        .tenant(ctx)
        .build()
        .unwrap()
}

#[test]
fn same_tenant_gets_the_same_salt_and_different_tenants_different_salts() {
    let issuer = issuer();
    let t = TenantId::random();
    let a1 = gate(&issuer, &root(&issuer, t, None), Policy::default());
    let a2 = gate(&issuer, &root(&issuer, t, None), Policy::default());
    assert_eq!(a1.cache_salt(None).unwrap(), a2.cache_salt(None).unwrap());
    let mut salts = HashSet::new();
    for _ in 0..200 {
        let g = gate(
            &issuer,
            &root(&issuer, TenantId::random(), None),
            Policy::default(),
        );
        assert!(salts.insert(g.cache_salt(None).unwrap()));
    }
    assert!(!salts.contains(&a1.cache_salt(None).unwrap()));
    // A scope within the tenant gives another salt, and "no scope" differs from an empty one.
    let scoped = a1.cache_salt(Some("workspace-1")).unwrap();
    assert_ne!(scoped, a1.cache_salt(None).unwrap());
    assert_ne!(
        a1.cache_salt(Some("")).unwrap(),
        a1.cache_salt(None).unwrap()
    );
    assert_eq!(a1.cache_salt(None).unwrap().as_str().len(), 64);
}

#[test]
fn salt_is_stable_across_processes_with_the_same_master_key_and_differs_under_another() {
    let t = TenantId::random();
    let mk = |bytes: [u8; 32]| {
        ContextIssuer::new(MasterKey::from_bytes(KeyId::new("k1").unwrap(), bytes))
    };
    let (i1, i2, other) = (mk([1; 32]), mk([1; 32]), mk([2; 32]));
    let s1 = gate(&i1, &root(&i1, t, None), Policy::default())
        .cache_salt(None)
        .unwrap();
    let s2 = gate(&i2, &root(&i2, t, None), Policy::default())
        .cache_salt(None)
        .unwrap();
    let s3 = gate(&other, &root(&other, t, None), Policy::default())
        .cache_salt(None)
        .unwrap();
    assert_eq!(s1, s2);
    assert_ne!(s1, s3);
}

#[test]
fn a_caller_supplied_salt_is_ignored() {
    let issuer = issuer();
    let victim = root(&issuer, TenantId::random(), None);
    let attacker = root(&issuer, TenantId::random(), None);
    let victim_salt = gate(&issuer, &victim, Policy::default())
        .cache_salt(None)
        .unwrap();
    let g = gate(&issuer, &attacker, Policy::default());
    // The attacker asks to share the victim's cache by passing its salt.
    let call = g
        .authorize(&ModelRequest::new("m", 10, 10).caller_salt(victim_salt.as_str()))
        .unwrap();
    assert_ne!(call.cache_salt, victim_salt);
    assert_eq!(call.cache_salt, g.cache_salt(None).unwrap());
}

#[test]
fn a_model_outside_the_tenant_list_is_denied() {
    let issuer = issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let policy = Policy::new(TenantPolicy::new().models(["small"]).unwrap());
    let g = gate(&issuer, &ctx, policy);
    g.authorize(&ModelRequest::new("small", 10, 10)).unwrap();
    let err = g
        .authorize(&ModelRequest::new("large", 10, 10))
        .unwrap_err();
    assert!(
        matches!(err, Error::ModelNotAllowed { ref model } if model == "large"),
        "{err:?}"
    );
    assert!(g.record_usage("large", Usage::new(1, 1)).is_err());
}

#[test]
fn a_model_outside_the_context_capabilities_is_denied_even_if_the_tenant_may_use_it() {
    let issuer = issuer();
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("p").unwrap())
        .capabilities(Capabilities::unrestricted().with_models(["small"]).unwrap())
        .issue()
        .unwrap();
    let policy = Policy::new(TenantPolicy::new().models(["small", "large"]).unwrap());
    let g = gate(&issuer, &ctx, policy);
    assert!(g.allowed_models().allows("small"));
    assert!(matches!(
        g.authorize(&ModelRequest::new("large", 1, 1)),
        Err(Error::ModelNotAllowed { .. })
    ));
}

#[test]
fn a_sub_agent_gate_is_narrowed_to_its_own_models() {
    let issuer = issuer();
    let parent = root(&issuer, TenantId::random(), None);
    let child = parent
        .delegate(AgentId::new("coder").unwrap())
        .models(["small"])
        .issue()
        .unwrap();
    let g = gate(&issuer, &parent, Policy::default());
    let cg = g.delegate(&child).unwrap();
    assert!(g.authorize(&ModelRequest::new("large", 1, 1)).is_ok());
    assert!(matches!(
        cg.authorize(&ModelRequest::new("large", 1, 1)),
        Err(Error::ModelNotAllowed { .. })
    ));
    let stranger = root(&issuer, TenantId::random(), None);
    assert!(matches!(
        g.delegate(&stranger),
        Err(Error::Context(tenant_core::Error::NotDescendant))
    ));
}

#[test]
fn a_request_longer_than_the_max_context_is_refused() {
    let issuer = issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let g = gate(
        &issuer,
        &ctx,
        Policy::new(TenantPolicy::new().max_context_tokens(8_000)),
    );
    g.authorize(&ModelRequest::new("m", 6_000, 2_000)).unwrap();
    let err = g
        .authorize(&ModelRequest::new("m", 6_000, 2_001))
        .unwrap_err();
    assert!(matches!(
        err,
        Error::ContextTooLong {
            requested: 8_001,
            max: 8_000
        }
    ));
}

#[test]
fn an_expired_or_revoked_context_cannot_use_the_gate() {
    let issuer = issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let g = gate(&issuer, &ctx, Policy::default());
    issuer.revocations().revoke(&ctx);
    assert!(matches!(
        g.authorize(&ModelRequest::new("m", 1, 1)),
        Err(Error::Context(tenant_core::Error::ContextRevoked))
    ));
    assert!(g.cache_salt(None).is_err());
    let err = ModelGate::builder(&issuer.authority())
        .salt_key(issuer.subkey(Purpose::CacheSalt))
        .tenant(&ctx)
        .build()
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Context(tenant_core::Error::ContextRevoked)
    ));
}

#[test]
fn a_gate_needs_a_cache_salt_subkey() {
    let issuer = issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    assert!(matches!(
        ModelGate::builder(&issuer.authority()).tenant(&ctx).build(),
        Err(Error::InvalidConfiguration(_))
    ));
    let wrong = ModelGate::builder(&issuer.authority())
        .salt_key(issuer.subkey(Purpose::Vault))
        .tenant(&ctx)
        .build();
    assert!(matches!(wrong, Err(Error::InvalidConfiguration(_))));
}

#[test]
fn usage_events_carry_tenant_lineage_model_tokens_multiplier_and_cost() {
    let issuer = issuer();
    let parent = root(&issuer, TenantId::random(), None);
    let child = sub_agent(&parent, "researcher", 1_000);
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let g = ModelGate::builder(&issuer.authority())
        .rates(
            ModelRates::new().with(
                "large",
                ModelRate::new()
                    .output_weight(5)
                    .price_per_1k(3_000, 15_000),
            ),
        )
        .salt_key(issuer.subkey(Purpose::CacheSalt))
        .sink(sink.clone())
        .tenant(&child)
        .build()
        .unwrap();
    let event = g.record_usage("large", Usage::new(2_000, 100)).unwrap();
    let recorded = sink.0.lock().unwrap();
    assert_eq!(recorded.as_slice(), std::slice::from_ref(&event));
    assert_eq!(event.tenant, parent.tenant());
    let lineage: Vec<_> = event.lineage.iter().map(|a| a.as_str()).collect();
    assert_eq!(lineage, ["orchestrator", "researcher"]);
    assert_eq!((event.input_tokens, event.output_tokens), (2_000, 100));
    assert_eq!((event.input_multiplier, event.output_multiplier), (1, 5));
    assert_eq!(event.weighted_tokens, 2_500);
    assert_eq!(event.cost_micros, 7_500);
}

#[test]
fn a_context_of_another_issuer_gets_no_gate_and_meters_nothing() {
    let issuer = issuer();
    let rogue = support::issuer();
    let real = root(&issuer, TenantId::random(), None);
    let forged = root(&rogue, real.tenant(), None);
    let sink = Arc::new(Collect(Mutex::new(Vec::new())));
    let build = |ctx: &TenantContext| {
        ModelGate::builder(&issuer.authority())
            .salt_key(issuer.subkey(Purpose::CacheSalt))
            .sink(sink.clone())
            .tenant(ctx)
            .build()
    };
    assert!(matches!(
        build(&forged),
        Err(Error::Context(tenant_core::Error::ForeignAuthority))
    ));
    // Nor through delegation from a real gate.
    let gate = build(&real).unwrap();
    let forged_child = sub_agent(&forged, "w", 10);
    assert!(matches!(
        gate.delegate(&forged_child),
        Err(Error::Context(tenant_core::Error::ForeignAuthority))
    ));
    assert!(sink.0.lock().unwrap().is_empty());
}
