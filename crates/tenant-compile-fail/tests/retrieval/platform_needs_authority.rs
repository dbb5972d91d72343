// A platform cannot be built without the authority whose contexts it
// serves (nor without tenant keys).
use tenant_core::{DerivedKeyProvider, KeyId, MasterKey};
use tenant_retrieval::{EdgeBackend, Retrieval};

async fn start(edge: EdgeBackend) {
    let _ = Retrieval::builder(edge)
        .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new("d").unwrap())))
        .build()
        .await;
}

fn main() {}
