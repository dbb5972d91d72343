use tenant_core::Scoped;

fn main() {
    // The only way into the `Scoped` builder state is `Scoped::new(&ctx)`.
    let _state = Scoped { ctx: todo!() };
}
