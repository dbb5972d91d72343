//! Promotion Pool → Silo (and back) online: concurrent searches during the
//! move always see exactly the tenant's documents.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use support::*;
use tenant_core::{IsolationTier, TenantId};
use tenant_retrieval::testing::qdrant_edge::{
    self, Condition, FieldCondition, Filter, Match, ValueVariants,
};
use tenant_retrieval::SearchQuery;

const N: usize = 300;

fn raw_count(w: &World, physical: &str, tenant: TenantId) -> usize {
    let filter = Filter::new_must(Condition::Field(FieldCondition::new_match(
        "tenant_id".parse().unwrap(),
        Match::new_value(ValueVariants::String(tenant.to_string())),
    )));
    w.edge
        .as_ref()
        .unwrap()
        .with_raw_shard(physical, |s| {
            s.count(qdrant_edge::CountRequest {
                filter: Some(filter),
                exact: true,
            })
            .unwrap()
        })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_searches_stay_complete_and_correct_during_promote_and_demote() {
    let w = Arc::new(world(Kind::Edge, pool()).await.unwrap());
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, SEALED), w.client(&b, SEALED));
    for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
        ca.upsert(chunk.iter().map(|i| {
            w.doc(&format!("a{i}"), &format!("alpha doc {i}"))
                .with_metadata("lang", "en")
        }))
        .await
        .unwrap();
    }
    cb.upsert((0..50).map(|i| w.doc(&format!("b{i}"), &format!("beta doc {i}"))))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let checks = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for r in 0..3 {
        let (ca, w, stop, checks) = (ca.clone(), w.clone(), stop.clone(), checks.clone());
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let q = SearchQuery::new(w.embed.embed_one(&format!("alpha doc {r}"))).top_k(1000);
                let hits = ca.search(q).await.expect("search during migration");
                // Every original document, nothing foreign; "late" may be
                // there (it is written and deleted mid-test).
                assert!(hits.iter().all(|h| h.id.starts_with('a') || h.id == "late"));
                assert!(hits.iter().all(|h| h.text.starts_with("alpha")));
                let originals: std::collections::HashSet<&str> = hits
                    .iter()
                    .map(|h| h.id.as_str())
                    .filter(|id| *id != "late")
                    .collect();
                assert_eq!(originals.len(), N, "incomplete results during migration");
                let n = ca.count(None).await.unwrap();
                assert!(
                    n == N as u64 || n == N as u64 + 1,
                    "count {n} during migration"
                );
                checks.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let report = w.retrieval.promote(&a).await.unwrap();
    let sealed = report.iter().find(|m| m.collection == SEALED).unwrap();
    assert_eq!(
        (sealed.from, sealed.to, sealed.moved, sealed.quarantined),
        (IsolationTier::Pool, IsolationTier::Silo, N as u64, 0)
    );
    assert_eq!(
        w.retrieval.tier_of(&a, SEALED).unwrap(),
        IsolationTier::Silo
    );

    let pool_name = w.retrieval.naming().pool(SEALED);
    let silo_name = w.retrieval.naming().silo(SEALED, a.tenant());
    assert_eq!(
        raw_count(&w, &pool_name, a.tenant()),
        0,
        "pool still holds promoted points"
    );
    assert_eq!(raw_count(&w, &silo_name, a.tenant()), N);
    assert_eq!(
        raw_count(&w, &pool_name, b.tenant()),
        50,
        "other tenant disturbed"
    );

    // Writes after the switch land in the Silo.
    ca.upsert([w.doc("late", "alpha late")]).await.unwrap();
    ca.delete(&["late"]).await.unwrap();

    let back = w.retrieval.demote(&a).await.unwrap();
    assert!(back
        .iter()
        .any(|m| m.collection == SEALED && m.moved == N as u64));
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert!(checks.load(Ordering::Relaxed) > 0);
    assert_eq!(
        w.retrieval.tier_of(&a, SEALED).unwrap(),
        IsolationTier::Pool
    );
    assert!(!w.physical_names().await.contains(&silo_name));
    assert_eq!(raw_count(&w, &pool_name, a.tenant()), N);
    assert!(ca.get("a7").await.unwrap().is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotion_is_persisted_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let tenant = TenantId::random();
    let issuer = tenant_core::ContextIssuer::new(tenant_core::MasterKey::generate(
        tenant_core::KeyId::new("k").unwrap(),
    ));
    let ctx = issuer
        .context()
        .tenant(tenant)
        .principal(tenant_core::PrincipalId::new("ops").unwrap())
        .capabilities(tenant_core::Capabilities::unrestricted())
        .issue()
        .unwrap();
    let build = || async {
        platform(
            tenant_retrieval::EdgeBackend::open(dir.path()).unwrap(),
            &issuer,
            pool(),
            TenantId::random(),
        )
        .build()
        .await
        .unwrap()
    };
    {
        let r = build().await;
        let c = tenant_retrieval::RetrievalClient::builder()
            .backend(&r)
            .collection(DOCS)
            .tenant(&ctx)
            .build()
            .unwrap();
        c.upsert([tenant_retrieval::Document::new(
            "d",
            vec![0.5; DIMS],
            "kept",
        )])
        .await
        .unwrap();
        r.promote(&ctx).await.unwrap();
    }
    let r = build().await;
    assert_eq!(r.tier_of(&ctx, DOCS).unwrap(), IsolationTier::Silo);
    let c = tenant_retrieval::RetrievalClient::builder()
        .backend(&r)
        .collection(DOCS)
        .tenant(&ctx)
        .build()
        .unwrap();
    assert_eq!(c.get("d").await.unwrap().unwrap().text, "kept");
}
