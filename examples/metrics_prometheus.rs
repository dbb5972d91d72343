//! The SDK's metrics in Prometheus text format.
//!
//! The SDK records through the [`metrics`] facade; this program installs
//! the Prometheus recorder (`metrics-exporter-prometheus`), runs a few
//! tenants' tool calls and model-call reservations (one tool the tenant may
//! not use, one reservation over its quota), and prints what a scrape of
//! `/metrics` would return. In a service, serve
//! [`PrometheusHandle::render`] from a route, or enable the exporter's
//! `http-listener` feature.
//!
//! Run with `cargo run --example metrics_prometheus`.

use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tenant_sdk::prelude::*;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let prometheus: PrometheusHandle = PrometheusBuilder::new().install_recorder()?;

    // A small, known set of tenants: their ids may label the counters.
    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("2026-11")?))
        .telemetry(Telemetry::new().tenant_labels(true))
        .build()?;
    let registry = ToolRegistry::new(&issuer.authority());
    for name in ["search", "shell"] {
        registry.register(FnTool::new(
            name,
            "demo tool",
            json!({"type": "object"}),
            |_call, input| async move { Ok(input) },
        ))?;
    }
    let policies = ToolPolicies::new();
    let quotas = Quotas::builder(&issuer.authority())
        .policy(Policy::new(TenantPolicy::new().tenant_limits(
            Limits::unlimited().tokens_per(1_000, Duration::from_secs(3600)),
        )))
        .build()?;
    let platform = Platform::builder(&issuer.authority())
        .tools(&registry, &policies)
        .quotas(&quotas)
        .build()?;

    for _ in 0..2 {
        let tenant = TenantId::random();
        policies.set(tenant, ToolPolicy::deny_all().allow_tools(["search"]));
        let ctx = issuer
            .context()
            .tenant(tenant)
            .principal(PrincipalId::new("agent-runner")?)
            .capabilities(Capabilities::unrestricted())
            .issue()?;
        let handles = platform.handles(&ctx)?;

        let reservation = handles
            .quota()?
            .reserve(&Estimate::new("small", 600, 0))
            .await?;
        handles
            .tools()?
            .call("search", json!({"q": "plan"}))
            .await?;
        reservation.settle(Usage::new(500, 0)).await?;

        // Refused: a tool outside the tenant's policy, and a reservation
        // past the hour's 1,000 tokens.
        let denied = handles.tools()?.call("shell", json!({})).await;
        println!("shell: {}", SdkError::from(denied.unwrap_err()));
        let refused = handles
            .quota()?
            .reserve(&Estimate::new("small", 800, 0))
            .await;
        println!("reserve: {}", SdkError::from(refused.unwrap_err()));
    }

    println!("\n{}", prometheus.render());
    Ok(())
}
