//! Limits and policy: tier defaults plus per-tenant overrides.
//!
//! A [`Policy`] holds one [`TenantPolicy`] per [`IsolationTier`], optional
//! per-tenant overrides and the platform-wide [`Limits`]. [`Quotas`],
//! [`FairScheduler`] and [`ModelGate`] all read the same policy, so a
//! tenant's budget, scheduling weight and model list are configured in one
//! place.
//!
//! Loadable from configuration (`tenant_core::config::from_toml_str` or
//! `from_json_str`; a mistake names its field):
//!
//! ```toml
//! [default]                        # every tier not listed below
//! tenant.tokens = { limit = 1_000_000, period_secs = 3600 }
//! tenant.requests = { capacity = 10, refill_per_second = 2.0 }
//! agent.tokens = { limit = 200_000, period_secs = 3600 }
//! models = ["small", "large"]
//! max_context_tokens = 128_000
//!
//! [tiers.silo]
//! tenant.cost_micros = { limit = 50_000_000, period_secs = 86400 }
//! weight = 4
//! on_ledger_failure = { open = { tokens = 20_000, cost_micros = 5_000 } }
//!
//! [tenants."6f1c1f4e-8a4b-4c3e-9d6a-0b7e3a2f5c11"]
//! tenant.tokens = { limit = 5_000_000, period_secs = 3600 }
//!
//! [platform]
//! tokens = { limit = 100_000_000, period_secs = 60 }
//! ```
//!
//! [`Quotas`]: crate::Quotas
//! [`FairScheduler`]: crate::FairScheduler
//! [`ModelGate`]: crate::ModelGate

use std::collections::HashMap;
use std::time::Duration;

use tenant_core::{IsolationTier, Scope, TenantContext, TenantId};

use crate::pricing::Amount;

/// A budget that resets at the start of every period (periods are aligned to
/// the Unix epoch, so every process agrees on where one ends).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeriodBudget {
    /// The most that may be used (settled plus reserved) in one period.
    pub limit: u64,
    /// The length of a period (at least one millisecond).
    pub period: Duration,
}

/// A token bucket for request rates: `capacity` requests at once, refilled
/// at `refill_per_second`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    /// Burst size.
    pub capacity: u32,
    /// Requests added back per second.
    pub refill_per_second: f64,
}

/// The limits of one level of the hierarchy (the platform, a tenant, or each
/// agent of a tenant). Everything is unlimited until set.
///
/// Token limits count *weighted* tokens: input and output tokens times the
/// model's burndown multipliers ([`ModelRate`](crate::ModelRate)). Cost is
/// in micro-units of the platform's currency.
///
/// ```
/// use std::time::Duration;
/// use tenant_governance::Limits;
/// let day = Duration::from_secs(86_400);
/// let limits = Limits::unlimited()
///     .tokens_per(2_000_000, day)
///     .cost_per(50_000_000, day)
///     .requests(20, 5.0);
/// assert!(limits.is_limited());
/// ```
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(try_from = "crate::policy_config::LimitsConfig")]
pub struct Limits {
    pub(crate) tokens: Option<PeriodBudget>,
    pub(crate) cost: Option<PeriodBudget>,
    pub(crate) requests: Option<RateLimit>,
}

impl Limits {
    /// No limit at all.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// At most `limit` weighted tokens per `period`.
    pub fn tokens_per(mut self, limit: u64, period: Duration) -> Self {
        self.tokens = Some(PeriodBudget {
            limit,
            period: period.max(Duration::from_millis(1)),
        });
        self
    }

    /// At most `limit_micros` of cost per `period`.
    pub fn cost_per(mut self, limit_micros: u64, period: Duration) -> Self {
        self.cost = Some(PeriodBudget {
            limit: limit_micros,
            period: period.max(Duration::from_millis(1)),
        });
        self
    }

    /// A request-rate token bucket.
    pub fn requests(mut self, capacity: u32, refill_per_second: f64) -> Self {
        let refill = if refill_per_second.is_finite() && refill_per_second > 0.0 {
            refill_per_second
        } else {
            0.0
        };
        self.requests = Some(RateLimit {
            capacity,
            refill_per_second: refill,
        });
        self
    }

    /// The token budget, if any.
    pub fn token_budget(&self) -> Option<PeriodBudget> {
        self.tokens
    }

    /// The cost budget, if any.
    pub fn cost_budget(&self) -> Option<PeriodBudget> {
        self.cost
    }

    /// The request rate limit, if any.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        self.requests
    }

    /// Whether any limit is set.
    pub fn is_limited(&self) -> bool {
        self.tokens.is_some() || self.cost.is_some() || self.requests.is_some()
    }
}

/// What to do when the quota ledger cannot be reached.
///
/// ```
/// use tenant_governance::{FailureMode, TenantPolicy};
/// // While the ledger is down, admit at most 20k weighted tokens and 5k
/// // micro-units of cost per tenant in this process; they are charged to
/// // the ledger once it is back.
/// let policy = TenantPolicy::new().on_ledger_failure(FailureMode::open(20_000, 5_000));
/// assert_eq!(policy.failure_mode(), FailureMode::open(20_000, 5_000));
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureMode {
    /// Refuse the call with [`Error::LedgerUnavailable`](crate::Error) (the
    /// default).
    #[default]
    Closed,
    /// Admit calls while the ledger is unreachable, against a small local
    /// allowance per tenant (per process): estimates admitted and not yet
    /// charged to the ledger never pass `allowance`. Each admission is a
    /// `tenant_audit` warning, and the usage of each such call is charged
    /// to the ledger, exactly once, when it is reachable again. Meant for
    /// tiers where availability matters more than exact budgets; with `n`
    /// replicas a tenant can overspend by at most `n × allowance`.
    Open {
        /// Most weighted tokens and cost one tenant may have admitted and
        /// not yet charged.
        allowance: Amount,
    },
}

impl FailureMode {
    /// [`FailureMode::Open`] with an allowance of `tokens` weighted tokens
    /// and `cost_micros` of cost per tenant.
    pub const fn open(tokens: u64, cost_micros: u64) -> Self {
        FailureMode::Open {
            allowance: Amount {
                tokens,
                cost_micros,
            },
        }
    }
}

/// Everything governance knows about one tenant (or one tier's default).
///
/// ```
/// use std::time::Duration;
/// use tenant_governance::{Limits, TenantPolicy};
/// let policy = TenantPolicy::new()
///     .tenant_limits(Limits::unlimited().tokens_per(1_000_000, Duration::from_secs(3600)))
///     .weight(4)
///     .models(["small", "large"])?
///     .max_context_tokens(128_000);
/// assert_eq!(policy.scheduling_weight(), 4);
/// # Ok::<(), tenant_governance::Error>(())
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(try_from = "crate::policy_config::TenantPolicyConfig")]
pub struct TenantPolicy {
    pub(crate) tenant: Limits,
    pub(crate) agent: Limits,
    pub(crate) weight: u32,
    pub(crate) max_in_flight: usize,
    pub(crate) max_queued: usize,
    pub(crate) models: Scope,
    pub(crate) max_context_tokens: u64,
    pub(crate) on_ledger_failure: FailureMode,
}

impl Default for TenantPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl TenantPolicy {
    /// Unlimited quotas, weight 1, 16 requests in flight and 1024 queued,
    /// every model (still narrowed by each context's capabilities), 200k
    /// tokens of context, fail closed.
    pub fn new() -> Self {
        Self {
            tenant: Limits::unlimited(),
            agent: Limits::unlimited(),
            weight: 1,
            max_in_flight: 16,
            max_queued: 1024,
            models: Scope::any(),
            max_context_tokens: 200_000,
            on_ledger_failure: FailureMode::Closed,
        }
    }

    /// Limits for the tenant as a whole.
    pub fn tenant_limits(mut self, limits: Limits) -> Self {
        self.tenant = limits;
        self
    }

    /// Limits for each agent of the tenant (keyed by agent id).
    pub fn agent_limits(mut self, limits: Limits) -> Self {
        self.agent = limits;
        self
    }

    /// Weighted-fair-queuing weight (at least 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Most requests of this tenant admitted at once (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// Most requests of this tenant waiting per lane.
    pub fn max_queued(mut self, n: usize) -> Self {
        self.max_queued = n;
        self
    }

    /// Models the tenant may use.
    ///
    /// # Errors
    ///
    /// [`Error::Context`](crate::Error::Context) when a name is not a valid
    /// capability name.
    pub fn models<I: IntoIterator<Item = S>, S: AsRef<str>>(
        mut self,
        names: I,
    ) -> crate::Result<Self> {
        self.models = Scope::only(names)?;
        Ok(self)
    }

    /// Replaces the model scope (e.g. `Scope::any()`).
    pub fn model_scope(mut self, scope: Scope) -> Self {
        self.models = scope;
        self
    }

    /// Largest input + output a single call may use.
    pub fn max_context_tokens(mut self, tokens: u64) -> Self {
        self.max_context_tokens = tokens;
        self
    }

    /// What to do when the ledger is unreachable.
    pub fn on_ledger_failure(mut self, mode: FailureMode) -> Self {
        self.on_ledger_failure = mode;
        self
    }

    /// The tenant-level limits.
    pub fn limits(&self) -> &Limits {
        &self.tenant
    }

    /// The per-agent limits.
    pub fn per_agent_limits(&self) -> &Limits {
        &self.agent
    }

    /// The scheduling weight.
    pub fn scheduling_weight(&self) -> u32 {
        self.weight
    }

    /// The allowed models.
    pub fn model_list(&self) -> &Scope {
        &self.models
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.on_ledger_failure
    }
}

/// Tier defaults, per-tenant overrides and platform-wide limits.
///
/// ```
/// use std::time::Duration;
/// use tenant_core::{IsolationTier, TenantId};
/// use tenant_governance::{Limits, Policy, TenantPolicy};
/// let hour = Duration::from_secs(3600);
/// let big_customer = TenantId::random();
/// let policy = Policy::new(TenantPolicy::new().tenant_limits(Limits::unlimited().tokens_per(100_000, hour)))
///     .tier(IsolationTier::Silo, TenantPolicy::new().weight(4))
///     .tenant(big_customer, TenantPolicy::new().weight(8))
///     .platform(Limits::unlimited().tokens_per(50_000_000, hour));
/// assert_eq!(policy.for_tenant(big_customer, IsolationTier::Pool).scheduling_weight(), 8);
/// ```
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(try_from = "crate::policy_config::PolicyConfig")]
pub struct Policy {
    pool: TenantPolicy,
    silo: TenantPolicy,
    overrides: HashMap<TenantId, TenantPolicy>,
    platform: Limits,
}

impl Default for Policy {
    fn default() -> Self {
        Self::new(TenantPolicy::new())
    }
}

impl Policy {
    /// Every tier starts from `default`; no platform limit.
    pub fn new(default: TenantPolicy) -> Self {
        Self {
            pool: default.clone(),
            silo: default,
            overrides: HashMap::new(),
            platform: Limits::unlimited(),
        }
    }

    /// Sets one tier's default.
    pub fn tier(mut self, tier: IsolationTier, policy: TenantPolicy) -> Self {
        match tier {
            IsolationTier::Pool => self.pool = policy,
            IsolationTier::Silo => self.silo = policy,
        }
        self
    }

    /// Overrides one tenant's policy (configuration, not a handle method).
    pub fn tenant(mut self, tenant: TenantId, policy: TenantPolicy) -> Self {
        self.overrides.insert(tenant, policy);
        self
    }

    /// Platform-wide limits shared by all tenants.
    pub fn platform(mut self, limits: Limits) -> Self {
        self.platform = limits;
        self
    }

    /// The platform-wide limits.
    pub fn platform_limits(&self) -> &Limits {
        &self.platform
    }

    /// The default policy of a tier.
    pub fn tier_default(&self, tier: IsolationTier) -> &TenantPolicy {
        match tier {
            IsolationTier::Pool => &self.pool,
            IsolationTier::Silo => &self.silo,
        }
    }

    /// The policy that applies to `tenant` in `tier`: its override, else the
    /// tier default.
    pub fn for_tenant(&self, tenant: TenantId, tier: IsolationTier) -> &TenantPolicy {
        self.overrides
            .get(&tenant)
            .unwrap_or_else(|| self.tier_default(tier))
    }

    /// The policy for a context's tenant.
    pub fn for_context(&self, ctx: &TenantContext) -> &TenantPolicy {
        self.for_tenant(ctx.tenant(), ctx.tier())
    }
}
