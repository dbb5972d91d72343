// Nothing public reaches a backend around the tenant-scoped client: the
// platform object does not hand out its backend, a backend has no data
// methods, and stored points and scopes cannot even be named.
use tenant_retrieval::{EdgeBackend, Retrieval};

async fn raw(retrieval: &Retrieval, edge: &EdgeBackend) {
    let _ = retrieval.backend();
    let _ = edge.drop_collection("tr_docs_pool").await;
}

// The compiler's hint to import the operations trait leads nowhere.
mod hint {
    use tenant_retrieval::backend::Store;
}

fn forge() -> tenant_retrieval::point::StoredPoint {
    todo!()
}

fn scope() -> tenant_retrieval::ScopedFilter {
    todo!()
}

fn main() {}
