//! The benchmarks' data: random unit vectors, documents, contexts and
//! clients, the same for the embedded and the server benchmarks.
#![allow(dead_code)]

use rand::Rng;
use tenant_core::{Capabilities, ContextIssuer, PrincipalId, TenantContext, TenantId};
use tenant_retrieval::{Document, Retrieval, RetrievalClient};

pub const DIMS: usize = 384;
pub const TENANTS: usize = 100;

/// `BENCH_POINTS`, else `default`.
pub fn points(default: usize) -> usize {
    std::env::var("BENCH_POINTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// A random unit vector of `DIMS` dimensions.
pub fn vector(rng: &mut impl Rng) -> Vec<f32> {
    let v: Vec<f32> = (0..DIMS).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.into_iter().map(|x| x / n).collect()
}

/// `n` documents `doc-0..n` with random vectors and two metadata fields.
pub fn documents(rng: &mut impl Rng, n: usize) -> Vec<Document> {
    (0..n)
        .map(|i| {
            Document::new(
                format!("doc-{i}"),
                vector(rng),
                format!("text of document {i} with some words in it"),
            )
            .with_metadata("lang", "en")
            .with_metadata("n", i as i64)
        })
        .collect()
}

/// An unrestricted context for `tenant`.
pub fn context(issuer: &ContextIssuer, tenant: TenantId) -> TenantContext {
    issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("bench").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap()
}

/// A client of `ctx` on `collection`.
pub fn client(r: &Retrieval, ctx: &TenantContext, collection: &str) -> RetrievalClient {
    RetrievalClient::builder()
        .backend(r)
        .collection(collection)
        .tenant(ctx)
        .build()
        .unwrap()
}
