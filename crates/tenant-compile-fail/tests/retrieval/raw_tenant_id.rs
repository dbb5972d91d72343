// A raw tenant id is not a context, and no client method takes one.
use tenant_core::TenantId;
use tenant_retrieval::{Retrieval, RetrievalClient};

fn by_id(retrieval: &Retrieval, tenant: TenantId) {
    let _ = RetrievalClient::builder()
        .backend(retrieval)
        .collection("docs")
        .tenant(tenant);
}

async fn get_for(client: &RetrievalClient, tenant: TenantId) {
    let _ = client.get(tenant).await;
    let _ = client.delegate(&tenant);
}

fn main() {}
