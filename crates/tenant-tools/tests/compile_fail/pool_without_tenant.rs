use tenant_tools::WarmPool;

fn main() {
    let _pool = WarmPool::builder().size(2).build();
}
