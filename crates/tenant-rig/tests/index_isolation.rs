//! `TenantIndex` through rig's own traits: the tenant is fixed, filters
//! only narrow, and unsupported or tenant-naming filters are typed errors.

mod platform;

use platform::{Platform, A_SECRET, B_SECRET};
use rig_core::tool::{ErasedTool, ToolContext};
use rig_core::vector_store::request::SearchFilter;
use rig_core::vector_store::{VectorSearchRequest, VectorStoreError, VectorStoreIndex};
use serde_json::json;
use tenant_rig::{Error, RigFilter, TenantDocument, TenantIndex};

fn request(filter: Option<RigFilter>) -> VectorSearchRequest<RigFilter> {
    let b = VectorSearchRequest::builder()
        .query("rust agents retrieval")
        .samples(10);
    match filter {
        Some(f) => b.filter(f).build(),
        None => b.build(),
    }
}

async fn top_n(
    index: &TenantIndex,
    filter: Option<RigFilter>,
) -> Result<Vec<TenantDocument>, VectorStoreError> {
    Ok(index
        .top_n::<TenantDocument>(request(filter))
        .await?
        .into_iter()
        .map(|r| r.document)
        .collect())
}

fn assert_only(docs: &[TenantDocument], prefix: &str, secret: &str, foreign: &str) {
    assert!(!docs.is_empty(), "expected the tenant's own documents");
    for d in docs {
        assert!(d.id.starts_with(prefix), "foreign id {}", d.id);
        assert!(d.text.contains(secret));
        assert!(!d.text.contains(foreign), "foreign text leaked: {}", d.text);
    }
}

#[tokio::test]
async fn filter_naming_another_tenant_or_anything_is_refused_and_nothing_changes() {
    let p = Platform::start().await;
    let index = p.index(p.a);
    let widen =
        RigFilter::eq("tenant_id", json!(p.b.to_string())).or(RigFilter::eq("lang", json!("en")));

    let err = top_n(&index, Some(widen.clone())).await.unwrap_err();
    assert!(
        matches!(Error::from_vector_store(&err), Some(Error::TenantFieldInFilter(k)) if k == "tenant_id"),
        "{err:?}"
    );
    let err = index
        .top_n_ids(request(Some(widen.clone())))
        .await
        .unwrap_err();
    assert!(matches!(
        Error::from_vector_store(&err),
        Some(Error::TenantFieldInFilter(_))
    ));
    assert!(matches!(
        index.search(&request(Some(widen))).await,
        Err(Error::TenantFieldInFilter(_))
    ));

    // Even an `and` that would only narrow is refused: the field is the SDK's.
    let own =
        RigFilter::eq("tenant_id", json!(p.a.to_string())).and(RigFilter::eq("lang", json!("en")));
    assert!(matches!(
        index.search(&request(Some(own))).await,
        Err(Error::TenantFieldInFilter(_))
    ));

    assert_eq!(p.count(p.a).await, 3);
    assert_eq!(p.count(p.b).await, 3);
}

#[tokio::test]
async fn an_or_filter_matching_the_other_tenants_documents_still_returns_only_this_tenants() {
    let p = Platform::start().await;
    // Both tenants' documents all have lang = en and years 2020..=2022, so
    // any widening of the tenant condition would show B's documents here.
    let any = RigFilter::eq("lang", json!("en"))
        .or(RigFilter::gt("year", json!(0)))
        .or(RigFilter::eq("lang", json!("de")));
    let docs = top_n(&p.index(p.a), Some(any)).await.unwrap();
    assert_eq!(docs.len(), 3);
    assert_only(&docs, "a-", A_SECRET, B_SECRET);
}

#[tokio::test]
async fn a_narrowing_filter_narrows_within_the_tenant() {
    let p = Platform::start().await;
    let f = RigFilter::gt("year", json!(2020)).and(RigFilter::lt("year", json!(2022)));
    let docs = top_n(&p.index(p.a), Some(f)).await.unwrap();
    assert_eq!(
        docs.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["a-1"]
    );
}

#[tokio::test]
async fn two_tenants_results_never_mix() {
    let p = Platform::start().await;
    let (ia, ib) = (p.index(p.a), p.index(p.b));
    let (a, b) = tokio::join!(top_n(&ia, None), top_n(&ib, None));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.len(), 3);
    assert_eq!(b.len(), 3);
    assert_only(&a, "a-", A_SECRET, B_SECRET);
    assert_only(&b, "b-", B_SECRET, A_SECRET);

    let ids = ia.top_n_ids(request(None)).await.unwrap();
    assert!(ids.iter().all(|r| r.id.starts_with("a-")));
}

#[tokio::test]
async fn unsupported_filter_shapes_are_typed_errors_not_ignored() {
    let p = Platform::start().await;
    let index = p.index(p.a);
    for f in [
        RigFilter::eq("lang", json!(null)).or(RigFilter::eq("lang", json!("en"))),
        RigFilter::eq("year", json!(2020.5)),
        RigFilter::gt("year", json!("2020")),
        RigFilter::eq("lang", json!(["en", "de"])),
    ] {
        let err = top_n(&index, Some(f.clone())).await.unwrap_err();
        assert!(
            matches!(
                Error::from_vector_store(&err),
                Some(Error::UnsupportedFilter(_))
            ),
            "{f:?}: {err:?}"
        );
    }
    // Keys the store rejects (paths into the payload) are the store's typed error.
    let err = top_n(&index, Some(RigFilter::eq("meta.lang", json!("en"))))
        .await
        .unwrap_err();
    assert!(matches!(
        Error::from_vector_store(&err),
        Some(Error::Retrieval(
            tenant_retrieval::Error::InvalidInput { .. }
        ))
    ));
}

#[tokio::test]
async fn too_many_samples_is_rigs_samples_out_of_range() {
    let p = Platform::start().await;
    let req = VectorSearchRequest::builder()
        .query("rust")
        .samples(1_000_000)
        .build();
    let err = p.index(p.a).top_n::<TenantDocument>(req).await.unwrap_err();
    assert!(matches!(err, VectorStoreError::SamplesOutOfRange { .. }));
}

/// rig's blanket impl makes the index a tool whose arguments — filter
/// included — the model writes. Drive it exactly as rig's runtime does:
/// raw JSON arguments into `ErasedTool::execute`.
#[tokio::test]
async fn the_model_callable_search_tool_cannot_widen_the_tenant() {
    let p = Platform::start().await;
    let index = p.index(p.a);
    assert_eq!(ErasedTool::name(&index), "search_vector_store");

    let widen = json!({
        "query": "rust agents", "samples": 10,
        "filter": {"or": [{"eq": ["tenant_id", p.b.to_string()]}, {"eq": ["lang", "en"]}]}
    });
    let result = index
        .execute(widen.to_string(), &mut ToolContext::new())
        .await;
    let err = result.error().expect("the widening call must fail");
    let vs = err
        .downcast_ref::<VectorStoreError>()
        .expect("the index's error is kept");
    assert!(matches!(
        Error::from_vector_store(vs),
        Some(Error::TenantFieldInFilter(_))
    ));
    assert!(!format!("{result:?}").contains(B_SECRET));

    let narrow = json!({
        "query": "rust agents", "samples": 10,
        "filter": {"or": [{"eq": ["lang", "en"]}, {"gt": ["year", 0]}]}
    });
    let result = index
        .execute(narrow.to_string(), &mut ToolContext::new())
        .await;
    assert!(result.is_success(), "{result:?}");
    let shown = result.output().render();
    assert!(shown.contains(A_SECRET));
    assert!(!shown.contains(B_SECRET));
}

#[tokio::test]
async fn a_revoked_context_stops_the_index() {
    let p = Platform::start().await;
    let ctx = p.ctx(p.a);
    let index = TenantIndex::new(
        p.client(&ctx),
        tenant_retrieval::HashEmbedder::new(platform::DIMS),
    );
    p.issuer.revocations().revoke(&ctx);
    assert!(matches!(
        index.search(&request(None)).await,
        Err(Error::Context(_) | Error::Retrieval(tenant_retrieval::Error::Context(_)))
    ));
}

#[tokio::test]
async fn a_sub_agent_index_needs_the_collection_capability() {
    let p = Platform::start().await;
    let index = p.index(p.a);
    let researcher = index
        .context()
        .delegate(tenant_core::AgentId::new("researcher").unwrap())
        .capabilities(
            tenant_core::Capabilities::none()
                .with_collections(["docs"])
                .unwrap(),
        )
        .issue()
        .unwrap();
    let child = index.delegate(&researcher).unwrap();
    let docs = top_n(&child, None).await.unwrap();
    assert_only(&docs, "a-", A_SECRET, B_SECRET);

    let toolsmith = index
        .context()
        .delegate(tenant_core::AgentId::new("toolsmith").unwrap())
        .capabilities(
            tenant_core::Capabilities::none()
                .with_tools(["add"])
                .unwrap(),
        )
        .issue()
        .unwrap();
    assert!(matches!(
        index.delegate(&toolsmith),
        Err(Error::Retrieval(tenant_retrieval::Error::CollectionNotAllowed(c))) if c == "docs"
    ));
}

#[tokio::test]
async fn contexts_of_another_issuer_get_no_index_and_no_delegated_index_and_nothing_changes() {
    use tenant_core::{Capabilities, ContextIssuer, KeyId, MasterKey, PrincipalId};
    let p = Platform::start().await;
    // Same tenant, same key id, but minted by an issuer the platform's
    // retrieval was not configured with.
    let rogue = ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()));
    let forged = rogue
        .context()
        .tenant(p.b)
        .principal(PrincipalId::new("mallory").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    let foreign = |e: &tenant_retrieval::Error| {
        matches!(
            e,
            tenant_retrieval::Error::Context(tenant_core::Error::ForeignAuthority)
        )
    };

    let err = tenant_retrieval::RetrievalClient::builder()
        .backend(&p.retrieval)
        .collection("docs")
        .tenant(&forged)
        .build()
        .unwrap_err();
    assert!(foreign(&err), "{err:?}");
    match p.index(p.a).delegate(&forged) {
        Err(Error::Retrieval(e)) => assert!(foreign(&e), "{e:?}"),
        other => panic!("expected ForeignAuthority, got {other:?}"),
    }
    assert_eq!(p.count(p.a).await, 3);
    assert_eq!(p.count(p.b).await, 3);
}
