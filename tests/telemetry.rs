//! One HTTP request's spans and metrics: the request reserves a model call,
//! calls an allowed tool and then one the tenant may not use; the spans are
//! captured by a `tracing` layer and the metrics by the Prometheus
//! recorder, and both are checked by name and attribute.
#![cfg(all(feature = "axum", feature = "tools", feature = "governance"))]

mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, Request, StatusCode};
use axum::routing::post;
use axum::{Extension, Json, Router};
use jsonwebtoken::get_current_timestamp;
use metrics_exporter_prometheus::PrometheusBuilder;
use serde_json::{json, Value};
use support::{sign, tools_and_quota, verifier, SECRET};
use tenant_sdk::axum_extract::{TenantAuth, TenantAuthLayer};
use tenant_sdk::prelude::*;
use tower::ServiceExt;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A finished picture of one span: its name and every field recorded on it.
#[derive(Clone, Debug)]
struct SpanRecord {
    name: &'static str,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<(Id, SpanRecord)>>>);

struct FieldVisitor<'a>(&'a mut BTreeMap<String, String>);

impl Visit for FieldVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').to_owned(),
        );
    }
}

impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Spans {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        let name = attrs.metadata().name();
        self.0
            .lock()
            .unwrap()
            .push((id.clone(), SpanRecord { name, fields }));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        let mut spans = self.0.lock().unwrap();
        if let Some((_, span)) = spans.iter_mut().rev().find(|(i, _)| i == id) {
            values.record(&mut FieldVisitor(&mut span.fields));
        }
    }
}

impl Spans {
    fn named(&self, name: &str) -> Vec<SpanRecord> {
        let spans = self.0.lock().unwrap();
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .collect()
    }
}

async fn run(
    State(platform): State<Platform>,
    Extension(ctx): Extension<TenantContext>,
) -> Result<Json<Value>, SdkError> {
    let handles = platform.handles(&ctx)?;
    let reservation = handles
        .quota()?
        .reserve(&Estimate::new("small", 100, 0))
        .await?;
    let found = handles
        .tools()?
        .call("search", json!({"q": "plan"}))
        .await?;
    reservation.settle(Usage::new(80, 0)).await?;
    handles.tools()?.call("shell", json!({})).await?;
    Ok(Json(found))
}

#[tokio::test(flavor = "current_thread")]
async fn one_request_exports_operation_spans_and_metrics_with_their_attributes() {
    let prometheus = PrometheusBuilder::new().install_recorder().unwrap();
    let spans = Spans::default();
    let _subscriber =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));

    let issuer = ContextIssuer::builder(MasterKey::generate(KeyId::new("k").unwrap()))
        .telemetry(Telemetry::new().tenant_labels(true))
        .build()
        .unwrap();
    let (platform, policies) = tools_and_quota(&issuer, &["search", "shell"], 1_000);
    let router = Router::new()
        .route("/run", post(run))
        .layer(TenantAuthLayer::new(Arc::new(TenantAuth::new(
            verifier(),
            issuer,
        ))))
        .with_state(platform);

    let tenant = TenantId::random();
    policies.set(tenant, ToolPolicy::deny_all().allow_tools(["search"]));
    let token = sign(
        json!({"sub": "alice@example.com", "tenant_id": tenant.to_string(),
               "exp": get_current_timestamp() + 600}),
        SECRET,
    );
    let request = Request::post("/run")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    // Spans: one per operation, named after it, with the context's
    // attributes and OpenTelemetry names; the principal stays out.
    let tenant_id = tenant.to_string();
    let reserve = spans.named("quota.reserve");
    assert_eq!(reserve.len(), 1, "{reserve:?}");
    assert_eq!(reserve[0].fields["tenant.id"], tenant_id);
    assert_eq!(reserve[0].fields["gen_ai.request.model"], "small");
    assert!(!reserve[0].fields.contains_key("error.type"), "{reserve:?}");
    assert_eq!(spans.named("quota.settle").len(), 1);

    let calls = spans.named("tool.call");
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (ok, denied) = (&calls[0].fields, &calls[1].fields);
    assert_eq!(ok["gen_ai.tool.name"], "search");
    assert_eq!(ok["gen_ai.operation.name"], "execute_tool");
    assert_eq!(ok["tenant.id"], tenant_id);
    assert!(ok.contains_key("tenant.context_id"));
    assert!(ok.contains_key("gen_ai.agent.name"));
    assert!(!ok.contains_key("error.type"), "{ok:?}");
    assert_eq!(denied["gen_ai.tool.name"], "shell");
    assert_eq!(denied["error.type"], "tool_not_allowed");
    assert_eq!(denied["otel.status_code"], "ERROR");
    for (_, span) in spans.0.lock().unwrap().iter() {
        assert!(!span.fields.contains_key("enduser.id"), "{span:?}");
        assert!(
            !span
                .fields
                .values()
                .any(|v| v.contains("alice@example.com")),
            "the principal leaked into {span:?}"
        );
    }

    // Metrics: the denial by action and reason (tenant label opted in) and
    // the ledger's latency per operation.
    let scrape = prometheus.render();
    let denial = scrape
        .lines()
        .find(|l| l.starts_with("tenant_sdk_denials_total{"))
        .unwrap_or_else(|| panic!("no denial counter in\n{scrape}"));
    for label in [
        "action=\"tool.call\"",
        "reason=\"tool_not_allowed\"",
        &format!("tenant=\"{tenant_id}\""),
    ] {
        assert!(denial.contains(label), "{label} missing from {denial}");
    }
    assert!(denial.ends_with(" 1"), "{denial}");
    for operation in ["reserve", "settle"] {
        assert!(
            scrape.lines().any(
                |l| l.starts_with("tenant_sdk_ledger_latency_seconds_count{")
                    && l.contains("ledger=\"in_process\"")
                    && l.contains(&format!("operation=\"{operation}\""))
                    && l.contains("outcome=\"ok\"")
                    && l.ends_with(" 1")
            ),
            "no ledger latency for {operation} in\n{scrape}"
        );
    }
}
