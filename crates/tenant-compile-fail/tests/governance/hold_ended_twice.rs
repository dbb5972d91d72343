// A hold ends once: settling or releasing consumes it.
use tenant_governance::{Amount, Hold, Ledger};

async fn twice(ledger: &dyn Ledger, hold: Hold) {
    ledger.release(hold).await.unwrap();
    ledger.settle(hold, Amount::default()).await.unwrap();
}

fn main() {}
