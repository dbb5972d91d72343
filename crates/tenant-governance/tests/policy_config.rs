//! Quota policies from configuration files: applied as written, and every
//! mistake refused with the field it is in.

use std::time::Duration;

use tenant_core::*;
use tenant_governance::{Error, Estimate, FailureMode, Policy, Quotas};

const POLICY: &str = r#"
[default]
tenant.tokens = { limit = 1000, period_secs = 3600 }
models = ["small", "large"]

[tiers.silo]
tenant.tokens = { limit = 5000, period_secs = 3600 }
weight = 4
on_ledger_failure = { open = { tokens = 200, cost_micros = 0 } }

[platform]
requests = { capacity = 100, refill_per_second = 10.0 }
"#;

#[tokio::test]
async fn a_policy_from_toml_limits_what_it_says() {
    let policy: Policy = config::from_toml_str(POLICY).unwrap();
    let silo = policy.tier_default(IsolationTier::Silo);
    assert_eq!(silo.scheduling_weight(), 4);
    assert_eq!(silo.failure_mode(), FailureMode::open(200, 0));
    assert_eq!(
        silo.limits().token_budget().map(|b| (b.limit, b.period)),
        Some((5000, Duration::from_secs(3600)))
    );
    assert!(policy.platform_limits().rate_limit().is_some());

    let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k").unwrap()));
    let quotas = Quotas::builder(&issuer.authority())
        .policy(policy)
        .build()
        .unwrap();
    let ctx = issuer
        .context()
        .tenant(TenantId::random())
        .principal(PrincipalId::new("p").unwrap())
        .capabilities(Capabilities::unrestricted())
        .issue()
        .unwrap();
    let _held = quotas
        .reserve(&ctx, &Estimate::new("small", 900, 0))
        .await
        .unwrap();
    let err = quotas
        .reserve(&ctx, &Estimate::new("small", 200, 0))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
}

#[test]
fn policy_mistakes_name_their_field() {
    let field = |text: &str| match config::from_toml_str::<Policy>(text) {
        Err(tenant_core::Error::Config { field, reason }) => (field, reason),
        other => panic!("{text}: {other:?}"),
    };
    let cases = [
        (
            "[default]\ntenant.tokens = { limit = 10, period_secs = 0 }",
            "default.tenant.tokens.period_secs",
        ),
        (
            "[default]\ntenant.tokens = { limit = 10 }",
            "default.tenant.tokens",
        ),
        (
            "[default]\ntenant.cost_micros = { limit = 18446744073709551615, period_secs = 60 }",
            "default.tenant.cost_micros.limit",
        ),
        (
            "[default]\ntenant.requests = { capacity = 1, refill_per_second = -1.0 }",
            "default.tenant.requests.refill_per_second",
        ),
        ("[default]\nweight = 0", "default.weight"),
        ("[default]\nmodels = [\"\"]", "default.models"),
        ("[tiers.bridge]\nweight = 1", "tiers.bridge"),
        ("[tenants.acme]\nweight = 1", "tenants.acme"),
        (
            "[default]\non_ledger_failure = \"sometimes\"",
            "default.on_ledger_failure",
        ),
        ("[default]\ntokens_per_hour = 5", "default.tokens_per_hour"),
    ];
    for (text, expected) in cases {
        let (f, reason) = field(text);
        assert_eq!(f, expected, "{text}: {reason}");
    }
}
