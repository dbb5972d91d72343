//! [`Policy`] (with its [`TenantPolicy`]s and [`Limits`]) from a
//! configuration file. Every value is checked while it is read, and a
//! mistake names its field (`tenants.<id>.tenant.tokens.period_secs`,
//! ...).

use std::collections::HashMap;
use std::time::Duration;

use serde::Deserialize;
use tenant_core::config::invalid_field;
use tenant_core::{IsolationTier, TenantId};

use crate::policy::{FailureMode, Limits, Policy, TenantPolicy};
use crate::pricing::MAX_AMOUNT;

/// `{ limit, period_secs }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BudgetConfig {
    limit: u64,
    period_secs: f64,
}

/// `{ capacity, refill_per_second }`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RateConfig {
    capacity: u32,
    refill_per_second: f64,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsConfig {
    #[serde(default)]
    tokens: Option<BudgetConfig>,
    #[serde(default)]
    cost_micros: Option<BudgetConfig>,
    #[serde(default)]
    requests: Option<RateConfig>,
}

fn period(field: &str, secs: f64) -> Result<Duration, String> {
    if !secs.is_finite() || !(0.001..=366.0 * 86_400.0).contains(&secs) {
        return Err(invalid_field(
            field,
            "must be a number of seconds between 0.001 and one year",
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn amount(field: &str, value: u64) -> Result<u64, String> {
    if value > MAX_AMOUNT {
        return Err(invalid_field(
            field,
            format!(
                "{value} is above the largest amount the ledger represents exactly ({MAX_AMOUNT})"
            ),
        ));
    }
    Ok(value)
}

impl TryFrom<LimitsConfig> for Limits {
    type Error = String;

    fn try_from(c: LimitsConfig) -> Result<Self, String> {
        let mut limits = Limits::unlimited();
        if let Some(b) = c.tokens {
            limits = limits.tokens_per(
                amount("tokens.limit", b.limit)?,
                period("tokens.period_secs", b.period_secs)?,
            );
        }
        if let Some(b) = c.cost_micros {
            limits = limits.cost_per(
                amount("cost_micros.limit", b.limit)?,
                period("cost_micros.period_secs", b.period_secs)?,
            );
        }
        if let Some(r) = c.requests {
            if !r.refill_per_second.is_finite() || r.refill_per_second < 0.0 {
                return Err(invalid_field(
                    "requests.refill_per_second",
                    "must be a finite number, at least 0",
                ));
            }
            limits = limits.requests(r.capacity, r.refill_per_second);
        }
        Ok(limits)
    }
}

/// What to do when the ledger is unreachable: `"closed"`, or
/// `{ open = { tokens, cost_micros } }`.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum FailureConfig {
    Closed,
    Open { tokens: u64, cost_micros: u64 },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TenantPolicyConfig {
    #[serde(default)]
    tenant: Option<Limits>,
    #[serde(default)]
    agent: Option<Limits>,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    max_in_flight: Option<usize>,
    #[serde(default)]
    max_queued: Option<usize>,
    /// Allowed models; absent: any.
    #[serde(default)]
    models: Option<Vec<String>>,
    #[serde(default)]
    max_context_tokens: Option<u64>,
    #[serde(default)]
    on_ledger_failure: Option<FailureConfig>,
}

impl TryFrom<TenantPolicyConfig> for TenantPolicy {
    type Error = String;

    fn try_from(c: TenantPolicyConfig) -> Result<Self, String> {
        let mut p = TenantPolicy::new();
        if let Some(l) = c.tenant {
            p = p.tenant_limits(l);
        }
        if let Some(l) = c.agent {
            p = p.agent_limits(l);
        }
        if let Some(w) = c.weight {
            if w == 0 {
                return Err(invalid_field("weight", "must be at least 1"));
            }
            p = p.weight(w);
        }
        if let Some(n) = c.max_in_flight {
            if n == 0 {
                return Err(invalid_field("max_in_flight", "must be at least 1"));
            }
            p = p.max_in_flight(n);
        }
        if let Some(n) = c.max_queued {
            p = p.max_queued(n);
        }
        if let Some(models) = c.models {
            p = p.models(models).map_err(|e| invalid_field("models", e))?;
        }
        if let Some(n) = c.max_context_tokens {
            p = p.max_context_tokens(n);
        }
        if let Some(f) = c.on_ledger_failure {
            p = p.on_ledger_failure(match f {
                FailureConfig::Closed => FailureMode::Closed,
                FailureConfig::Open {
                    tokens,
                    cost_micros,
                } => FailureMode::open(
                    amount("on_ledger_failure.open.tokens", tokens)?,
                    amount("on_ledger_failure.open.cost_micros", cost_micros)?,
                ),
            });
        }
        Ok(p)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PolicyConfig {
    /// The policy of every tier not listed in `tiers`.
    #[serde(default)]
    default: Option<TenantPolicy>,
    /// By tier name (`pool`, `silo`).
    #[serde(default)]
    tiers: HashMap<String, TenantPolicy>,
    #[serde(default)]
    tenants: HashMap<TenantId, TenantPolicy>,
    #[serde(default)]
    platform: Option<Limits>,
}

impl TryFrom<PolicyConfig> for Policy {
    type Error = String;

    fn try_from(c: PolicyConfig) -> Result<Self, String> {
        let mut policy = Policy::new(c.default.unwrap_or_default());
        for (name, p) in c.tiers {
            let tier = match name.as_str() {
                "pool" => IsolationTier::Pool,
                "silo" => IsolationTier::Silo,
                _ => {
                    return Err(invalid_field(
                        &format!("tiers.{name}"),
                        "unknown tier; expected `pool` or `silo`",
                    ))
                }
            };
            policy = policy.tier(tier, p);
        }
        for (tenant, p) in c.tenants {
            policy = policy.tenant(tenant, p);
        }
        if let Some(limits) = c.platform {
            policy = policy.platform(limits);
        }
        Ok(policy)
    }
}
