//! Replaying a revoked JWT mints nothing: revocation by context, by token
//! id (`jti`), by content (tokens without `jti`), by session (`sid`) and by
//! subject ("everything authenticated before"). Contexts already minted,
//! and their descendants, are refused too; everything else is untouched.

mod support;

use std::time::{Duration, SystemTime};

use serde_json::json;
use support::*;
use tenant_core::*;

fn until() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

fn token_with(tenant: TenantId, extra: serde_json::Value) -> String {
    let mut c = jwt_claims(tenant);
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    hs_token(&c)
}

#[test]
fn revoking_a_jwt_context_stops_the_same_jwt_from_minting_again() {
    for extra in [json!({"jti": "t-1"}), json!({})] {
        let issuer = issuer();
        let verifier = hs_verifier();
        let tenant = TenantId::random();
        let jwt = token_with(tenant, extra.clone());
        let other_jwt = token_with(tenant, json!({"jti": "t-2", "sub": "bob"}));
        let ctx = verifier.verify(&jwt, &issuer).unwrap();
        let child = ctx.delegate(agent("worker")).issue().unwrap();
        let other = verifier.verify(&other_jwt, &issuer).unwrap();

        issuer.revocations().revoke(&ctx);

        assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
        assert!(matches!(child.check(), Err(Error::ContextRevoked)));
        assert_eq!(
            rejection(verifier.verify(&jwt, &issuer)),
            ClaimRejection::Revoked,
            "{extra}"
        );
        // Its context token cannot bring it back either.
        assert!(matches!(
            issuer.accept_token(ctx.to_token().as_str()),
            Err(Error::ContextRevoked)
        ));
        // Other tokens of the tenant are untouched.
        other.check().unwrap();
        verifier.verify(&other_jwt, &issuer).unwrap();
    }
}

#[test]
fn revoking_a_delegated_context_leaves_the_jwt_usable() {
    let issuer = issuer();
    let verifier = hs_verifier();
    let jwt = token_with(TenantId::random(), json!({"jti": "t-1"}));
    let ctx = verifier.verify(&jwt, &issuer).unwrap();
    let child = ctx.delegate(agent("worker")).issue().unwrap();
    issuer.revocations().revoke(&child);
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
    ctx.check().unwrap();
    verifier.verify(&jwt, &issuer).unwrap();
}

#[test]
fn revocation_by_jti_refuses_the_token_and_every_context_from_it() {
    let issuer = issuer();
    let verifier = hs_verifier();
    let tenant = TenantId::random();
    let jwt = token_with(tenant, json!({"jti": "abc"}));
    let first = verifier.verify(&jwt, &issuer).unwrap();
    let second = verifier.verify(&jwt, &issuer).unwrap();
    let grandchild = first
        .delegate(agent("a"))
        .issue()
        .unwrap()
        .delegate(agent("b"))
        .issue()
        .unwrap();
    let same_jti_other_issuer = ClaimVerifier::builder()
        .hs256(JWT_SECRET)
        .issuer("https://other-idp.example.com")
        .audience(JWT_AUD)
        .build()
        .unwrap();
    let mut foreign_claims = jwt_claims(tenant);
    foreign_claims["iss"] = json!("https://other-idp.example.com");
    foreign_claims["jti"] = json!("abc");
    let foreign_jwt = hs_token(&foreign_claims);

    issuer
        .revocations()
        .apply(&Revocation::jwt_id(verifier.issuer(), "abc", until()));

    for ctx in [&first, &second, &grandchild] {
        assert!(matches!(ctx.check(), Err(Error::ContextRevoked)));
    }
    assert_eq!(
        rejection(verifier.verify(&jwt, &issuer)),
        ClaimRejection::Revoked
    );
    // A jti is scoped to its issuer: the same jti from another IdP is another token.
    same_jti_other_issuer.verify(&foreign_jwt, &issuer).unwrap();
    verifier
        .verify(&token_with(tenant, json!({"jti": "abd"})), &issuer)
        .unwrap();
    assert_eq!(issuer.revocations().len(), 1);
}

#[test]
fn revocation_by_session_refuses_every_token_of_the_session() {
    let issuer = issuer();
    let verifier = hs_verifier();
    let tenant = TenantId::random();
    let a = token_with(tenant, json!({"jti": "1", "sid": "s-1"}));
    let b = token_with(tenant, json!({"jti": "2", "sid": "s-1"}));
    let other_session = token_with(tenant, json!({"jti": "3", "sid": "s-2"}));
    let ctx_a = verifier.verify(&a, &issuer).unwrap();
    let child = ctx_a.delegate(agent("c")).issue().unwrap();

    issuer
        .revocations()
        .apply(&Revocation::jwt_session(verifier.issuer(), "s-1", until()));

    assert!(matches!(ctx_a.check(), Err(Error::ContextRevoked)));
    assert!(matches!(child.check(), Err(Error::ContextRevoked)));
    assert_eq!(
        rejection(verifier.verify(&a, &issuer)),
        ClaimRejection::Revoked
    );
    assert_eq!(
        rejection(verifier.verify(&b, &issuer)),
        ClaimRejection::Revoked
    );
    verifier.verify(&other_session, &issuer).unwrap();
}

#[test]
fn revocation_by_subject_refuses_what_was_authenticated_before_the_cutoff() {
    let issuer = issuer();
    let verifier = hs_verifier();
    let tenant = TenantId::random();
    let alice = PrincipalId::new("alice@example.com").unwrap();
    let now = now_secs();
    let old = token_with(tenant, json!({"jti": "old", "iat": now - 60}));
    let no_iat = {
        let mut c = jwt_claims(tenant);
        c.as_object_mut().unwrap().remove("iat");
        hs_token(&c)
    };
    let bob = token_with(tenant, json!({"jti": "bob", "sub": "bob", "iat": now - 60}));
    let elsewhere = token_with(TenantId::random(), json!({"jti": "x", "iat": now - 60}));
    let old_ctx = verifier.verify(&old, &issuer).unwrap();
    let direct = issuer
        .context()
        .tenant(tenant)
        .principal(alice.clone())
        .capabilities(root_caps())
        .issue()
        .unwrap();
    let direct_child = direct.delegate(agent("c")).issue().unwrap();

    let cutoff = SystemTime::now() - Duration::from_secs(30);
    issuer
        .revocations()
        .apply(&Revocation::principal(tenant, &alice, cutoff, until()));

    assert!(matches!(old_ctx.check(), Err(Error::ContextRevoked)));
    assert_eq!(
        rejection(verifier.verify(&old, &issuer)),
        ClaimRejection::Revoked
    );
    // A token without `iat` cannot prove it is newer than the cutoff.
    assert_eq!(
        rejection(verifier.verify(&no_iat, &issuer)),
        ClaimRejection::Revoked
    );
    // Authenticated after the cutoff: fine.
    direct.check().unwrap();
    direct_child.check().unwrap();
    let fresh = token_with(tenant, json!({"jti": "new", "iat": now}));
    verifier.verify(&fresh, &issuer).unwrap();
    // Other principals and tenants: untouched.
    verifier.verify(&bob, &issuer).unwrap();
    verifier.verify(&elsewhere, &issuer).unwrap();

    // Logging out "until now" refuses the direct contexts too, and a cutoff
    // in the future refuses new ones until then.
    issuer.revocations().apply(&Revocation::principal(
        tenant,
        &alice,
        SystemTime::now() + Duration::from_secs(60),
        until(),
    ));
    assert!(matches!(direct_child.check(), Err(Error::ContextRevoked)));
    assert!(matches!(
        issuer.context().tenant(tenant).principal(alice).issue(),
        Err(Error::ContextRevoked)
    ));
    assert_eq!(
        rejection(verifier.verify(&fresh, &issuer)),
        ClaimRejection::Revoked
    );
}

#[test]
fn revocations_cross_processes_with_the_context_token() {
    // A context minted from a JWT keeps its token and session identity in
    // its context token, so a downstream registry can refuse it by jti.
    let upstream = issuer();
    let downstream = ContextIssuer::new(MasterKey::generate(KeyId::new("down").unwrap()));
    let verifier = hs_verifier();
    let jwt = token_with(TenantId::random(), json!({"jti": "j", "sid": "s"}));
    let ctx = verifier.verify(&jwt, &upstream).unwrap();
    let token = ctx.to_token();
    let remote = downstream
        .accept_remote(token.as_str(), &upstream.token_verifier())
        .unwrap();
    downstream
        .revocations()
        .apply(&Revocation::jwt_session(JWT_ISS, "s", until()));
    assert!(matches!(remote.check(), Err(Error::ContextRevoked)));
    assert!(matches!(
        downstream.accept_remote(token.as_str(), &upstream.token_verifier()),
        Err(Error::ContextRevoked)
    ));
    ctx.check().unwrap(); // the upstream has not heard of it (no shared store here)
}

#[test]
fn revocation_entries_round_trip_as_text_and_refuse_garbage() {
    let issuer = issuer();
    let ctx = hs_verifier()
        .verify(
            &token_with(TenantId::random(), json!({"jti": "j"})),
            &issuer,
        )
        .unwrap();
    let entries = [
        Revocation::context(&ctx),
        Revocation::context(&ctx.delegate(agent("c")).issue().unwrap()),
        Revocation::context_id(
            issuer
                .context()
                .tenant(TenantId::random())
                .principal(principal())
                .issue()
                .unwrap()
                .id(),
            until(),
        ),
        Revocation::jwt_id(JWT_ISS, "j", until()),
        Revocation::jwt_session(JWT_ISS, "s", until()),
        Revocation::principal(ctx.tenant(), ctx.principal(), SystemTime::now(), until()),
    ];
    for e in &entries {
        assert_eq!(&Revocation::from_text(&e.to_text()).unwrap(), e);
    }
    // The root's entry also carries the JWT; the child's does not.
    assert_ne!(
        entries[0].to_text().split(' ').count(),
        entries[1].to_text().split(' ').count()
    );
    for bad in [
        "",
        "1",
        "2 c 1 00",
        "1 c x 00000000000000000000000000000000",
        "1 c 1 0000",
        "1 t 1 zz",
        "1 p 1 1 00000000000000000000000000000000 61",
        "1 p 1 1 6f1c1f4e8a4b4c3e9d6a0b7e3a2f5c11 ff",
        "1 q 1 00",
    ] {
        assert!(
            matches!(
                Revocation::from_text(bad),
                Err(Error::MalformedRevocation(_))
            ),
            "{bad:?}"
        );
    }
    assert!(Revocation::from_text(&"1 ".repeat(2000)).is_err());
}

#[test]
fn a_root_revocation_outlives_a_context_capped_below_its_token() {
    // The issuer caps contexts at one minute; the token lives ten.
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .max_ttl(Duration::from_secs(60))
        .build()
        .unwrap();
    let jwt = token_with(TenantId::random(), json!({"exp": now_secs() + 600}));
    let ctx = hs_verifier().verify(&jwt, &issuer).unwrap();
    let entry = Revocation::context(&ctx);
    assert!(entry.until_unix_ms() >= (now_secs() + 600) * 1000);
    assert!(ctx.expires_at_unix_ms() < entry.until_unix_ms());
}
