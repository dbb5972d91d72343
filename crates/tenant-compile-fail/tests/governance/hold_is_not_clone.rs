// A hold cannot be copied to be ended a second time.
use tenant_governance::{Hold, Ledger};

async fn copy(ledger: &dyn Ledger, hold: Hold) {
    let copy = hold.clone();
    ledger.release(hold).await.unwrap();
    ledger.release(copy).await.unwrap();
}

fn main() {}
