// A client cannot be built without `.tenant(&ctx)`: `build()` does not
// exist before it.
use tenant_retrieval::{Retrieval, RetrievalClient};

fn open(retrieval: &Retrieval) {
    let _client = RetrievalClient::builder()
        .backend(retrieval)
        .collection("docs")
        .build();
}

fn main() {}
