//! Leak drills: points written into a collection behind the SDK's back
//! (raw qdrant-edge, bypassing every check) must be refused with
//! `LeakDetected`, an audit event, and nothing returned.

mod support;

use serde_json::{json, Map, Value};
use support::*;
use tenant_core::TenantId;
use tenant_retrieval::point::point_id;
use tenant_retrieval::qdrant_edge::{
    EdgeShard, Payload, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    UpdateOperation, VectorStructPersisted,
};
use tenant_retrieval::{Error, LeakReason, MetadataFilter, SearchQuery};
use uuid::Uuid;

fn plant(shard: &EdgeShard, id: Uuid, vector: Vec<f32>, payload: Map<String, Value>) {
    let point = PointStructPersisted {
        id: PointId::Uuid(id),
        vector: VectorStructPersisted::Single(vector),
        payload: Some(Payload(payload.into_iter().collect())),
    };
    shard
        .update(UpdateOperation::PointOperation(
            PointOperations::UpsertPoints(PointInsertOperations::PointsList(vec![point])),
        ))
        .unwrap();
    shard.flush();
}

fn raw_payload(shard: &EdgeShard, id: Uuid) -> Map<String, Value> {
    let rec = shard.retrieve(&[PointId::Uuid(id)], None, None).unwrap();
    rec.into_iter()
        .next()
        .unwrap()
        .payload
        .unwrap()
        .0
        .into_iter()
        .collect()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

fn assert_leak(result: Result<Vec<tenant_retrieval::Record>, Error>, want: LeakReason) {
    match result {
        Err(Error::LeakDetected { reason, .. }) => assert_eq!(reason, want),
        other => panic!("expected LeakDetected({want:?}), got {other:?}"),
    }
}

fn assert_audited(log: &str) {
    assert!(
        log.contains("tenant_audit")
            && log.contains("denied")
            && log.contains("possible cross-tenant leak"),
        "no audit event in: {log}"
    );
}

#[test]
fn foreign_tenant_field_planted_in_pool_is_refused_on_search_get_and_scroll() {
    let (_, log) = with_audit(async {
        let w = world(Kind::Edge, pool()).await.unwrap();
        let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
        let ca = w.client(&a, DOCS);
        ca.upsert([w.doc("mine", "alpha own text")]).await.unwrap();
        // An array-valued tenant field matches A's keyword condition in
        // Qdrant, so the store hands it back; the per-hit check must not.
        let planted = point_id(a.tenant(), "planted");
        let payload = obj(json!({
            "tenant_id": [a.tenant().to_string(), b.tenant().to_string()],
            "doc_id": "planted", "text": "beta's secret", "meta": {}
        }));
        let physical = w.retrieval.naming().pool(DOCS);
        w.edge
            .as_ref()
            .unwrap()
            .with_raw_shard(&physical, |s| {
                plant(s, planted, w.embed.embed_one("alpha own text"), payload)
            })
            .unwrap();

        let q = SearchQuery::new(w.embed.embed_one("alpha own text"));
        assert_leak(ca.search(q).await, LeakReason::ForeignTenantField);
        assert_leak(
            ca.get("planted").await.map(|r| r.into_iter().collect()),
            LeakReason::ForeignTenantField,
        );
        assert_leak(
            ca.scroll(None, None, 10).await.map(|p| p.records),
            LeakReason::ForeignTenantField,
        );
    });
    assert_audited(&log);
}

#[test]
fn payload_sealed_under_another_tenants_key_is_refused() {
    let (_, log) = with_audit(async {
        let w = world(Kind::Edge, pool()).await.unwrap();
        let (a, b) = (w.ctx(TenantId::random()), w.ctx(TenantId::random()));
        let (ca, cb) = (w.client(&a, SEALED), w.client(&b, SEALED));
        cb.upsert([w.doc("x", "beta sealed secret").with_metadata("lang", "en")])
            .await
            .unwrap();
        ca.upsert([w.doc("y", "alpha text").with_metadata("lang", "en")])
            .await
            .unwrap();

        // Copy B's sealed payload to the id A would use for "x", relabelled
        // as A's: the tenant condition and the id check pass, the seal not.
        let physical = w.retrieval.naming().pool(SEALED);
        let edge = w.edge.as_ref().unwrap();
        let mut stolen = edge
            .with_raw_shard(&physical, |s| raw_payload(s, point_id(b.tenant(), "x")))
            .unwrap();
        stolen.insert("tenant_id".into(), json!(a.tenant().to_string()));
        edge.with_raw_shard(&physical, |s| {
            plant(
                s,
                point_id(a.tenant(), "x"),
                w.embed.embed_one("beta sealed secret"),
                stolen,
            )
        })
        .unwrap();

        let q = SearchQuery::new(w.embed.embed_one("beta sealed secret"));
        assert_leak(ca.search(q).await, LeakReason::SealOpenFailed);
        // B is unaffected and still reads its own document.
        assert_eq!(
            cb.get("x").await.unwrap().unwrap().text,
            "beta sealed secret"
        );
    });
    assert_audited(&log);
}

#[test]
fn point_at_an_id_not_derived_from_the_tenant_is_refused() {
    let (_, log) = with_audit(async {
        let w = world(Kind::Edge, pool()).await.unwrap();
        let a = w.ctx(TenantId::random());
        let ca = w.client(&a, DOCS);
        let payload = obj(json!({
            "tenant_id": a.tenant().to_string(), "doc_id": "y", "text": "injected", "meta": {}
        }));
        let physical = w.retrieval.naming().pool(DOCS);
        w.retrieval
            .backend()
            .ensure_collection(
                &physical,
                tenant_retrieval::CollectionLayout {
                    dims: DIMS,
                    distance: tenant_retrieval::Distance::Cosine,
                },
            )
            .await
            .unwrap();
        w.edge
            .as_ref()
            .unwrap()
            .with_raw_shard(&physical, |s| {
                plant(s, Uuid::new_v4(), w.embed.embed_one("injected"), payload)
            })
            .unwrap();
        assert_leak(
            ca.search(SearchQuery::new(w.embed.embed_one("injected")))
                .await,
            LeakReason::PointIdMismatch,
        );
    });
    assert_audited(&log);
}

#[test]
fn tampered_clear_filter_field_is_refused() {
    let (_, log) = with_audit(async {
        let w = world(Kind::Edge, pool()).await.unwrap();
        let a = w.ctx(TenantId::random());
        let ca = w.client(&a, SEALED);
        ca.upsert([w.doc("z", "alpha sealed").with_metadata("lang", "en")])
            .await
            .unwrap();
        let physical = w.retrieval.naming().pool(SEALED);
        let edge = w.edge.as_ref().unwrap();
        let id = point_id(a.tenant(), "z");
        let mut p = edge
            .with_raw_shard(&physical, |s| raw_payload(s, id))
            .unwrap();
        p.insert("meta".into(), json!({"lang": "fr"}));
        edge.with_raw_shard(&physical, |s| {
            plant(s, id, w.embed.embed_one("alpha sealed"), p)
        })
        .unwrap();
        let q = SearchQuery::new(w.embed.embed_one("alpha sealed"))
            .filter(MetadataFilter::eq("lang", "fr"));
        assert_leak(ca.search(q).await, LeakReason::ClearFieldTampered);
    });
    assert_audited(&log);
}
