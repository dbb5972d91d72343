//! The operator handle: the only public path to raw inspection, drops and
//! leak drills. Refused for every context that is not an operator context
//! of this platform, re-checked on every action, audited.

mod support;

use support::*;
use tenant_core::{Capabilities, PrincipalId, TenantId};
use tenant_retrieval::{Error, LeakReason, SearchQuery};

macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        mod edge {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Edge).await
                }
            )*
        }
        mod server {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Kind::Server).await
                }
            )*
        }
    };
}

both_backends!(
    a_leak_drill_plants_a_canary_the_check_catches_and_removes_it,
    inspect_shows_stored_points_with_their_verdicts,
    drop_collection_drops_one_logical_collection_only,
    operator_handles_are_refused_to_every_other_context_and_nothing_changes,
);

async fn a_leak_drill_plants_a_canary_the_check_catches_and_removes_it(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let a = w.ctx(TenantId::random());
    for collection in [DOCS, SEALED] {
        let c = w.client(&a, collection);
        c.upsert([w.doc("mine", "own text").with_metadata("lang", "en")])
            .await
            .unwrap();
        let drill = w
            .operator()
            .leak_drill(collection, a.tenant())
            .await
            .unwrap();
        assert!(
            drill.reached_scope,
            "the canary must match the tenant scope"
        );
        assert_eq!(drill.detected, Some(LeakReason::TagMismatch));
        assert!(drill.removed);
        // The tenant is as before.
        assert_eq!(c.count(None).await.unwrap(), 1);
        let hits = c
            .search(SearchQuery::new(w.embed.embed_one("own text")))
            .await
            .unwrap();
        assert_eq!(hits.len(), 1);
    }
}

async fn inspect_shows_stored_points_with_their_verdicts(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    w.client(&a, SEALED)
        .upsert([w.doc("s", "sealed words").with_metadata("lang", "en")])
        .await
        .unwrap();
    w.client(&b, SEALED)
        .upsert([w.doc("t", "other words")])
        .await
        .unwrap();
    let points = w.operator().inspect(SEALED, a.tenant(), 10).await.unwrap();
    assert_eq!(points.len(), 1, "only the named tenant's points");
    let p = &points[0];
    assert_eq!(p.verdict, Ok(()));
    assert!(p.payload.contains_key("tag") && p.payload.contains_key("sealed"));
    assert!(
        !p.payload.contains_key("text"),
        "inspection shows the stored (sealed) form"
    );
    assert!(matches!(
        w.operator()
            .inspect(SEALED, a.tenant(), 0)
            .await
            .unwrap_err(),
        Error::InvalidInput { .. }
    ));
}

async fn drop_collection_drops_one_logical_collection_only(kind: Kind) {
    let silo_t = TenantId::random();
    let tiers = tenant_core::StaticTiers::new(tenant_core::IsolationTier::Pool)
        .with(silo_t, tenant_core::IsolationTier::Silo);
    let Some(w) = world(kind, tiers).await else {
        return;
    };
    let (p, s) = (w.ctx(TenantId::random()), w.ctx(silo_t));
    for ctx in [&p, &s] {
        for collection in [DOCS, NOTES] {
            w.client(ctx, collection)
                .upsert([w.doc("d", "text")])
                .await
                .unwrap();
        }
    }
    let naming = w.retrieval.naming();
    let mut dropped = w.operator().drop_collection(DOCS).await.unwrap();
    dropped.sort();
    let mut want = vec![naming.pool(DOCS), naming.silo(DOCS, silo_t)];
    want.sort();
    assert_eq!(dropped, want);
    let left = w.physical_names().await;
    assert!(left.contains(&naming.pool(NOTES)) && left.contains(&naming.silo(NOTES, silo_t)));
    assert_eq!(w.client(&p, NOTES).count(None).await.unwrap(), 1);
    // Clients recreate an empty collection on their next use.
    assert_eq!(w.client(&p, DOCS).count(None).await.unwrap(), 0);
}

async fn operator_handles_are_refused_to_every_other_context_and_nothing_changes(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let a = w.ctx(TenantId::random());
    let ca = w.client(&a, DOCS);
    ca.upsert([w.doc("d", "tenant text")]).await.unwrap();
    let before = w.physical_names().await;

    // A customer tenant's context, however privileged.
    let err = w.retrieval.operator(&a).unwrap_err();
    assert!(matches!(err, Error::NotAnOperator(_)), "{err:?}");

    // The operator tenant, but another issuer.
    let forged = rogue_issuer()
        .context()
        .tenant(w.operators)
        .principal(PrincipalId::new("mallory").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    assert!(matches!(
        w.retrieval.operator(&forged).unwrap_err(),
        Error::Context(tenant_core::Error::ForeignAuthority)
    ));

    // An operator context without the collection capability.
    let narrow = w
        .issuer
        .context()
        .tenant(w.operators)
        .principal(PrincipalId::new("support").unwrap())
        .capabilities(Capabilities::none().with_collections([NOTES]).unwrap())
        .issue()
        .unwrap();
    let op = w.retrieval.operator(&narrow).unwrap();
    assert!(matches!(
        op.drop_collection(DOCS).await.unwrap_err(),
        Error::CollectionNotAllowed(_)
    ));
    assert!(matches!(
        op.inspect(DOCS, a.tenant(), 10).await.unwrap_err(),
        Error::CollectionNotAllowed(_)
    ));
    assert!(matches!(
        op.leak_drill(DOCS, a.tenant()).await.unwrap_err(),
        Error::CollectionNotAllowed(_)
    ));

    // A revoked operator context stops working at once.
    let oncall = w.operator_ctx();
    let op = w.retrieval.operator(&oncall).unwrap();
    w.issuer.revocations().revoke(&oncall);
    assert!(matches!(
        op.drop_collection(DOCS).await.unwrap_err(),
        Error::Context(tenant_core::Error::ContextRevoked)
    ));
    assert!(matches!(
        op.health().await.unwrap_err(),
        Error::Context(tenant_core::Error::ContextRevoked)
    ));

    // A platform without an operator tenant opens no operator handle.
    let plain = match kind {
        Kind::Edge => {
            let dir = tempfile::tempdir().unwrap();
            let edge = tenant_retrieval::EdgeBackend::open(dir.path()).unwrap();
            let r = tenant_retrieval::Retrieval::builder(edge)
                .authority(w.issuer.authority())
                .keys(tenant_core::DerivedKeyProvider::new(data_master()))
                .build()
                .await
                .unwrap();
            Some((r, dir))
        }
        Kind::Server => None,
    };
    if let Some((plain, _dir)) = plain {
        assert!(matches!(
            plain.operator(&w.operator_ctx()).unwrap_err(),
            Error::NotAnOperator(_)
        ));
    }

    // Nothing changed.
    assert_eq!(w.physical_names().await, before);
    assert_eq!(ca.count(None).await.unwrap(), 1);
    assert_eq!(ca.get("d").await.unwrap().unwrap().text, "tenant text");
}
