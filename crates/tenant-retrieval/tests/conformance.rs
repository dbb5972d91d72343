//! Conformance and isolation: one suite, run against the embedded edge
//! backend always and against a Qdrant server when `QDRANT_URL` is set.

mod support;

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::json;
use support::*;
use tenant_core::{AgentId, Capabilities, IsolationTier, StaticTiers, TenantId};
use tenant_retrieval::{Document, Error, MetadataFilter, Record, SearchQuery};

macro_rules! conformance {
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

conformance!(
    same_doc_id_in_two_tenants_is_two_points,
    tenant_b_cannot_get_or_delete_tenant_a_documents_by_id,
    caller_supplied_tenant_id_is_rejected_and_nothing_is_written,
    a_widening_filter_still_returns_only_own_documents,
    delete_where_only_touches_own_documents,
    silo_and_pool_tenants_are_isolated_from_each_other,
    sealed_collection_round_trips_and_filters_on_clear_fields_only,
    search_respects_top_k_threshold_and_filters,
    scroll_pages_through_exactly_own_documents,
    invalid_input_is_rejected_before_anything_is_written,
    capabilities_limit_collections_and_delegation_narrows,
    revoked_context_is_refused_on_every_operation,
    contexts_of_another_issuer_are_refused_everywhere_and_nothing_changes,
    hostile_vectors_and_filters_are_typed_errors_and_nothing_changes,
);

async fn same_doc_id_in_two_tenants_is_two_points(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, DOCS), w.client(&b, DOCS));
    ca.upsert([w.doc("readme", "alpha secret plans")])
        .await
        .unwrap();
    cb.upsert([w.doc("readme", "beta public notes")])
        .await
        .unwrap();

    assert_eq!(
        ca.get("readme").await.unwrap().unwrap().text,
        "alpha secret plans"
    );
    assert_eq!(
        cb.get("readme").await.unwrap().unwrap().text,
        "beta public notes"
    );
    assert_eq!(ca.count(None).await.unwrap(), 1);
    assert_eq!(cb.count(None).await.unwrap(), 1);
}

async fn tenant_b_cannot_get_or_delete_tenant_a_documents_by_id(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, DOCS), w.client(&b, DOCS));
    ca.upsert([
        w.doc("contract-7", "alpha contract"),
        w.doc("memo", "alpha memo"),
    ])
    .await
    .unwrap();

    assert_eq!(cb.get("contract-7").await.unwrap(), None);
    assert!(cb
        .get_many(&["contract-7", "memo"])
        .await
        .unwrap()
        .is_empty());
    assert_eq!(cb.delete(&["contract-7", "memo"]).await.unwrap(), 0);
    assert_eq!(
        cb.delete_where(MetadataFilter::not(MetadataFilter::eq("x", 1)))
            .await
            .unwrap(),
        0
    );

    // Nothing changed for A.
    assert_eq!(ca.count(None).await.unwrap(), 2);
    assert_eq!(
        ca.get("contract-7").await.unwrap().unwrap().text,
        "alpha contract"
    );
}

async fn caller_supplied_tenant_id_is_rejected_and_nothing_is_written(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let ca = w.client(&a, DOCS);
    let forged = w
        .doc("x", "forged")
        .with_metadata("tenant_id", b.tenant().to_string());
    let err = ca.upsert([w.doc("ok", "fine"), forged]).await.unwrap_err();
    assert!(
        matches!(err, Error::ReservedMetadataKey(ref k) if k == "tenant_id"),
        "{err:?}"
    );
    assert_eq!(ca.count(None).await.unwrap(), 0);
    assert_eq!(w.client(&b, DOCS).count(None).await.unwrap(), 0);

    // Filtering on it is refused too.
    let err = ca
        .count(Some(MetadataFilter::eq(
            "tenant_id",
            b.tenant().to_string(),
        )))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ReservedMetadataKey(_)), "{err:?}");
}

async fn a_widening_filter_still_returns_only_own_documents(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, DOCS), w.client(&b, DOCS));
    ca.upsert((0..5).map(|i| {
        w.doc(&format!("a{i}"), "shared words here")
            .with_metadata("lang", "en")
    }))
    .await
    .unwrap();
    cb.upsert([w.doc("b0", "shared words here").with_metadata("lang", "de")])
        .await
        .unwrap();
    // A tautology: every point matches it. It must not reach past B's scope.
    let everything = MetadataFilter::any([
        MetadataFilter::eq("lang", "en"),
        MetadataFilter::not(MetadataFilter::eq("lang", "en")),
    ]);
    let hits = cb
        .search(
            SearchQuery::new(w.embed.embed_one("shared words here"))
                .top_k(50)
                .filter(everything.clone()),
        )
        .await
        .unwrap();
    assert_eq!(ids(&hits), vec!["b0"]);
    assert_eq!(cb.count(Some(everything)).await.unwrap(), 1);
}

async fn delete_where_only_touches_own_documents(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, DOCS), w.client(&b, DOCS));
    for c in [&ca, &cb] {
        c.upsert([
            w.doc("1", "one").with_metadata("kind", "draft"),
            w.doc("2", "two").with_metadata("kind", "final"),
        ])
        .await
        .unwrap();
    }
    assert_eq!(
        ca.delete_where(MetadataFilter::eq("kind", "draft"))
            .await
            .unwrap(),
        1
    );
    assert_eq!(ca.count(None).await.unwrap(), 1);
    assert_eq!(cb.count(None).await.unwrap(), 2);
    assert_eq!(
        cb.count(Some(MetadataFilter::eq("kind", "draft")))
            .await
            .unwrap(),
        1
    );
}

async fn silo_and_pool_tenants_are_isolated_from_each_other(kind: Kind) {
    let (silo_t, pool_t) = (TenantId::random(), TenantId::random());
    let tiers = StaticTiers::new(IsolationTier::Pool).with(silo_t, IsolationTier::Silo);
    let Some(w) = world(kind, tiers).await else {
        return;
    };
    let (s, p) = (w.ctx(silo_t), w.ctx(pool_t));
    let (cs, cp) = (w.client(&s, DOCS), w.client(&p, DOCS));
    cs.upsert([w.doc("d", "silo tenant data")]).await.unwrap();
    cp.upsert([w.doc("d", "pool tenant data")]).await.unwrap();
    assert_eq!(w.retrieval.tier_of(&s, DOCS).unwrap(), IsolationTier::Silo);
    let physical = w.retrieval.naming().silo(DOCS, silo_t);
    assert!(w.physical_names().await.contains(&physical));

    let q = SearchQuery::new(w.embed.embed_one("tenant data")).top_k(10);
    assert_eq!(
        texts(&cs.search(q.clone()).await.unwrap()),
        vec!["silo tenant data"]
    );
    assert_eq!(
        texts(&cp.search(q).await.unwrap()),
        vec!["pool tenant data"]
    );
}

async fn sealed_collection_round_trips_and_filters_on_clear_fields_only(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let a = w.ctx(TenantId::random());
    let c = w.client(&a, SEALED);
    c.upsert([
        w.doc("s1", "sealed text one")
            .with_metadata("lang", "en")
            .with_metadata("owner", "ann"),
        w.doc("s2", "sealed text two")
            .with_metadata("lang", "fr")
            .with_metadata("owner", "bob"),
    ])
    .await
    .unwrap();
    let got = c.get("s1").await.unwrap().unwrap();
    assert_eq!(got.text, "sealed text one");
    assert_eq!(got.metadata.get("owner"), Some(&json!("ann")));

    let hits = c
        .search(
            SearchQuery::new(w.embed.embed_one("sealed text"))
                .filter(MetadataFilter::eq("lang", "fr")),
        )
        .await
        .unwrap();
    assert_eq!(ids(&hits), vec!["s2"]);

    let err = c
        .count(Some(MetadataFilter::eq("owner", "ann")))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::FilterOnSealedField(ref k) if k == "owner"),
        "{err:?}"
    );
}

async fn search_respects_top_k_threshold_and_filters(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let c = w.client(&w.ctx(TenantId::random()), DOCS);
    c.upsert((0..20).map(|i| {
        w.doc(&format!("d{i}"), &format!("topic {} item {i}", i % 3))
            .with_metadata("group", (i % 3) as i64)
            .with_metadata("n", i as i64)
    }))
    .await
    .unwrap();
    let q = w.embed.embed_one("topic 1 item 4");
    assert_eq!(
        c.search(SearchQuery::new(q.clone()).top_k(3))
            .await
            .unwrap()
            .len(),
        3
    );
    let top = c
        .search(SearchQuery::new(q.clone()).top_k(1))
        .await
        .unwrap();
    assert_eq!(ids(&top), vec!["d4"]);
    let strict = c
        .search(SearchQuery::new(q.clone()).top_k(20).score_threshold(0.99))
        .await
        .unwrap();
    assert_eq!(ids(&strict), vec!["d4"]);
    let g = c
        .search(
            SearchQuery::new(q.clone())
                .top_k(20)
                .filter(MetadataFilter::eq("group", 2i64)),
        )
        .await
        .unwrap();
    assert!(!g.is_empty() && g.iter().all(|r| r.metadata["group"] == json!(2)));
    let r = c
        .count(Some(MetadataFilter::range(
            "n",
            tenant_retrieval::Bounds {
                gte: Some(15.0),
                ..Default::default()
            },
        )))
        .await
        .unwrap();
    assert_eq!(r, 5);
    let one_of = c
        .count(Some(MetadataFilter::one_of("n", [1i64, 2, 3])))
        .await
        .unwrap();
    assert_eq!(one_of, 3);
}

async fn scroll_pages_through_exactly_own_documents(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
    let (ca, cb) = (w.client(&a, DOCS), w.client(&b, DOCS));
    ca.upsert((0..23).map(|i| w.doc(&format!("a{i}"), "x")))
        .await
        .unwrap();
    cb.upsert((0..9).map(|i| w.doc(&format!("b{i}"), "x")))
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = ca.scroll(None, cursor, 5).await.unwrap();
        seen.extend(page.records.into_iter().map(|r| r.id));
        match page.next {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    seen.sort();
    let mut want: Vec<String> = (0..23).map(|i| format!("a{i}")).collect();
    want.sort();
    assert_eq!(seen, want);
}

async fn invalid_input_is_rejected_before_anything_is_written(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let c = w.client(&w.ctx(TenantId::random()), DOCS);
    let short = Document::new("d", vec![0.1; DIMS - 1], "t");
    assert!(matches!(
        c.upsert([w.doc("ok", "ok"), short]).await.unwrap_err(),
        Error::DimensionMismatch { expected: DIMS, actual, .. } if actual == DIMS - 1
    ));
    let nan = Document::new("d", vec![f32::NAN; DIMS], "t");
    assert!(matches!(
        c.upsert([nan]).await.unwrap_err(),
        Error::NonFinite { what: "vector" }
    ));
    assert!(matches!(
        c.upsert([w.doc("", "t")]).await.unwrap_err(),
        Error::InvalidInput { .. }
    ));
    let bad_key = w.doc("d", "t").with_metadata("a.b", 1);
    assert!(matches!(
        c.upsert([bad_key]).await.unwrap_err(),
        Error::InvalidInput { .. }
    ));
    assert!(matches!(
        c.search(SearchQuery::new(vec![0.0; DIMS]).top_k(0))
            .await
            .unwrap_err(),
        Error::InvalidInput { .. }
    ));
    assert_eq!(c.count(None).await.unwrap(), 0);
}

async fn capabilities_limit_collections_and_delegation_narrows(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let tenant = TenantId::random();
    let root = w.ctx_with(
        tenant,
        Capabilities::none()
            .with_collections([DOCS, NOTES])
            .unwrap()
            .with_max_delegation_depth(2),
    );
    let err = tenant_retrieval::RetrievalClient::builder()
        .backend(&w.retrieval)
        .collection(SEALED)
        .tenant(&root)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::CollectionNotAllowed(ref c) if c == SEALED));

    let docs = w.client(&root, DOCS);
    docs.upsert([w.doc("d", "root data")]).await.unwrap();
    let child = root
        .delegate(AgentId::new("researcher").unwrap())
        .collections([NOTES])
        .issue()
        .unwrap();
    // The child may not use the parent's `docs` client...
    assert!(matches!(
        docs.delegate(&child).unwrap_err(),
        Error::CollectionNotAllowed(_)
    ));
    // ...but gets `notes`.
    let notes = w.client(&root, NOTES).delegate(&child).unwrap();
    assert_eq!(notes.count(None).await.unwrap(), 0);
    // Another tenant's context is not a descendant.
    let other = w.ctx(TenantId::random());
    assert!(matches!(
        docs.delegate(&other).unwrap_err(),
        Error::Context(tenant_core::Error::NotDescendant)
    ));
}

async fn revoked_context_is_refused_on_every_operation(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let ctx = w.ctx(TenantId::random());
    let c = w.client(&ctx, DOCS);
    c.upsert([w.doc("d", "before")]).await.unwrap();
    w.issuer.revocations().revoke(&ctx);
    let revoked = |e: Error| matches!(e, Error::Context(tenant_core::Error::ContextRevoked));
    assert!(revoked(c.upsert([w.doc("e", "after")]).await.unwrap_err()));
    assert!(revoked(
        c.search(SearchQuery::new(w.embed.embed_one("before")))
            .await
            .unwrap_err()
    ));
    assert!(revoked(c.get("d").await.unwrap_err()));
    assert!(revoked(c.delete(&["d"]).await.unwrap_err()));
    assert!(revoked(c.count(None).await.unwrap_err()));
    assert!(revoked(c.scroll(None, None, 10).await.unwrap_err()));
}

async fn contexts_of_another_issuer_are_refused_everywhere_and_nothing_changes(kind: Kind) {
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let victim = w.ctx(TenantId::random());
    let cv = w.client(&victim, DOCS);
    cv.upsert([w.doc("plan", "victim plan")]).await.unwrap();

    // A context for the victim's tenant, minted by another issuer (same
    // key id, its own key): it verifies against itself, nothing more.
    let rogue = rogue_issuer();
    let forged = rogue
        .context()
        .tenant(victim.tenant())
        .principal(tenant_core::PrincipalId::new("mallory").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    let foreign = |e: Error| matches!(e, Error::Context(tenant_core::Error::ForeignAuthority));

    let err = tenant_retrieval::RetrievalClient::builder()
        .backend(&w.retrieval)
        .collection(DOCS)
        .tenant(&forged)
        .build()
        .unwrap_err();
    assert!(foreign(err));
    assert!(foreign(cv.delegate(&forged).unwrap_err()));
    // A child delegated from the forged context is just as foreign.
    let forged_child = forged
        .delegate(AgentId::new("sub").unwrap())
        .issue()
        .unwrap();
    assert!(foreign(cv.delegate(&forged_child).unwrap_err()));
    assert!(foreign(w.retrieval.promote(&forged).await.unwrap_err()));
    assert!(foreign(w.retrieval.demote(&forged).await.unwrap_err()));
    assert!(foreign(w.retrieval.tier_of(&forged, DOCS).unwrap_err()));
    // Not even for the operator tenant.
    let forged_operator = rogue
        .context()
        .tenant(w.operators)
        .principal(tenant_core::PrincipalId::new("mallory").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    assert!(foreign(w.retrieval.operator(&forged_operator).unwrap_err()));

    // Nothing changed: same tier, same document, nothing else.
    assert_eq!(
        w.retrieval.tier_of(&victim, DOCS).unwrap(),
        IsolationTier::Pool
    );
    assert_eq!(cv.count(None).await.unwrap(), 1);
    assert_eq!(cv.get("plan").await.unwrap().unwrap().text, "victim plan");
    assert!(!w
        .physical_names()
        .await
        .contains(&w.retrieval.naming().silo(DOCS, victim.tenant())));
}

async fn hostile_vectors_and_filters_are_typed_errors_and_nothing_changes(kind: Kind) {
    use tenant_retrieval::{Bounds, MAX_FILTER_DEPTH, MAX_FILTER_SIZE};
    let Some(w) = world(kind, pool()).await else {
        return;
    };
    let c = w.client(&w.ctx(TenantId::random()), DOCS);
    c.upsert([w.doc("keep", "kept text").with_metadata("n", 1i64)])
        .await
        .unwrap();
    let q = |v: Vec<f32>| SearchQuery::new(v);
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut v = w.embed.embed_one("kept");
        v[3] = bad;
        assert!(matches!(
            c.search(q(v)).await.unwrap_err(),
            Error::NonFinite {
                what: "query vector"
            }
        ));
        let mut doc = w.doc("poison", "x");
        doc.vector[0] = bad;
        assert!(matches!(
            c.upsert([doc]).await.unwrap_err(),
            Error::NonFinite { what: "vector" }
        ));
    }
    for len in [0, 1, DIMS - 1, DIMS + 1, 100_000] {
        assert!(matches!(
            c.search(q(vec![0.5; len])).await.unwrap_err(),
            Error::DimensionMismatch { actual, .. } if actual == len
        ));
    }
    assert!(matches!(
        c.search(q(w.embed.embed_one("kept")).score_threshold(f32::NAN))
            .await
            .unwrap_err(),
        Error::NonFinite {
            what: "score threshold"
        }
    ));

    // Deep enough to overflow the stack if anything recursed over it.
    let mut deep = MetadataFilter::eq("n", 1i64);
    for _ in 0..200_000 {
        deep = MetadataFilter::not(MetadataFilter::any([deep]));
    }
    let mut just_over = MetadataFilter::eq("n", 1i64);
    for _ in 0..MAX_FILTER_DEPTH {
        just_over = MetadataFilter::not(just_over);
    }
    for f in [deep, just_over] {
        assert!(matches!(
            c.search(q(w.embed.embed_one("kept")).filter(f.clone()))
                .await
                .unwrap_err(),
            Error::FilterTooDeep { .. }
        ));
        assert!(matches!(
            c.delete_where(f.clone()).await.unwrap_err(),
            Error::FilterTooDeep { .. }
        ));
        assert!(matches!(
            c.count(Some(f)).await.unwrap_err(),
            Error::FilterTooDeep { .. }
        ));
    }
    let wide =
        MetadataFilter::any((0..=MAX_FILTER_SIZE as i64).map(|i| MetadataFilter::eq("n", i)));
    assert!(matches!(
        c.delete_where(wide).await.unwrap_err(),
        Error::FilterTooLarge { .. }
    ));
    let nan_range = MetadataFilter::range(
        "n",
        Bounds {
            gte: Some(f64::NAN),
            ..Bounds::default()
        },
    );
    assert!(matches!(
        c.delete_where(nan_range).await.unwrap_err(),
        Error::NonFinite {
            what: "range bound"
        }
    ));
    let mut deep_meta = serde_json::json!(1);
    for _ in 0..tenant_retrieval::MAX_METADATA_DEPTH {
        deep_meta = serde_json::json!([deep_meta]);
    }
    assert!(matches!(
        c.upsert([w.doc("deep", "x").with_metadata("m", deep_meta)])
            .await
            .unwrap_err(),
        Error::InvalidInput {
            what: "metadata",
            ..
        }
    ));

    // Nothing changed.
    assert_eq!(c.count(None).await.unwrap(), 1);
    assert_eq!(c.get("keep").await.unwrap().unwrap().text, "kept text");
}

fn ids(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.id.as_str()).collect()
}

fn texts(records: &[Record]) -> Vec<&str> {
    records.iter().map(|r| r.text.as_str()).collect()
}

// ---------------------------------------------------------------------
// Randomized: three tenants (one Silo), random upserts, deletes and
// searches; every answer must equal the tenant's own model.

#[derive(Clone, Debug)]
enum Op {
    Upsert { tenant: usize, doc: u8, word: u8 },
    Delete { tenant: usize, doc: u8 },
    Search { tenant: usize, word: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3usize, 0..12u8, 0..6u8).prop_map(|(tenant, doc, word)| Op::Upsert { tenant, doc, word }),
        1 => (0..3usize, 0..12u8).prop_map(|(tenant, doc)| Op::Delete { tenant, doc }),
        2 => (0..3usize, 0..6u8).prop_map(|(tenant, word)| Op::Search { tenant, word }),
    ]
}

const WORDS: [&str; 6] = ["apple", "river", "engine", "violet", "marble", "comet"];

async fn random_ops_never_cross_tenants(kind: Kind, ops: Vec<Op>) {
    let tenants = [TenantId::random(), TenantId::random(), TenantId::random()];
    let tiers = StaticTiers::new(IsolationTier::Pool).with(tenants[2], IsolationTier::Silo);
    let Some(w) = world(kind, tiers).await else {
        return;
    };
    let clients: Vec<_> = tenants
        .iter()
        .map(|t| w.client(&w.ctx(*t), SEALED))
        .collect();
    let mut model: Vec<BTreeMap<String, String>> = vec![BTreeMap::new(); 3];
    for op in ops {
        match op {
            Op::Upsert { tenant, doc, word } => {
                let id = format!("doc-{doc}");
                let text = format!("{} t{tenant} {}", WORDS[word as usize], id);
                clients[tenant]
                    .upsert([w.doc(&id, &text).with_metadata("lang", "en")])
                    .await
                    .unwrap();
                model[tenant].insert(id, text);
            }
            Op::Delete { tenant, doc } => {
                let id = format!("doc-{doc}");
                let n = clients[tenant].delete(&[&id]).await.unwrap();
                assert_eq!(n, u64::from(model[tenant].remove(&id).is_some()));
            }
            Op::Search { tenant, word } => {
                let hits = clients[tenant]
                    .search(SearchQuery::new(w.embed.embed_one(WORDS[word as usize])).top_k(50))
                    .await
                    .unwrap();
                assert_eq!(
                    hits.len(),
                    model[tenant].len(),
                    "search must return all own docs"
                );
                for h in &hits {
                    assert_eq!(
                        model[tenant].get(&h.id),
                        Some(&h.text),
                        "foreign or stale hit"
                    );
                }
            }
        }
    }
    for (t, c) in clients.iter().enumerate() {
        assert_eq!(c.count(None).await.unwrap(), model[t].len() as u64);
        let page = c.scroll(None, None, 100).await.unwrap();
        let listed: BTreeMap<String, String> =
            page.records.into_iter().map(|r| (r.id, r.text)).collect();
        assert_eq!(listed, model[t]);
    }
}

fn run_random(kind: Kind, ops: Vec<Op>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(random_ops_never_cross_tenants(kind, ops));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn edge_three_tenants_random_ops_never_cross(ops in prop::collection::vec(op(), 1..40)) {
        run_random(Kind::Edge, ops);
    }

    #[test]
    fn server_three_tenants_random_ops_never_cross(ops in prop::collection::vec(op(), 1..40)) {
        run_random(Kind::Server, ops);
    }
}
