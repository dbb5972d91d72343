//! # tenant-governance
//!
//! Per-tenant quotas, fair scheduling, model entitlements and usage metering
//! for multi-tenant agent platforms, all driven by a verified
//! [`TenantContext`](tenant_core::TenantContext).
//!
//! * [`Quotas`] — reserve before a model call, settle after, release on
//!   drop. Limits are hierarchical (platform → tenant → agent → context,
//!   where delegated contexts draw from their ancestors' budgets and never
//!   past their own), come from tier defaults plus per-tenant overrides
//!   ([`Policy`]), and count weighted tokens ([`ModelRate`] burndown
//!   multipliers), cost and request rate. A call that would exceed any level
//!   is refused before it happens with [`Error::QuotaExceeded`].
//! * [`Ledger`] — where the counters live: [`InProcessLedger`] (sharded,
//!   bounded, evicts idle tenants) or [`RedisLedger`] (atomic Lua, shared by
//!   every replica; it applies settlements in the background, exactly once,
//!   so call [`Quotas::flush`] on shutdown). If the ledger fails, the call
//!   is refused
//!   ([`Error::LedgerUnavailable`]) unless the tier is configured
//!   [`FailureMode::Open`].
//! * [`RequestRateLimiter`] — a per-tenant request-rate check (GCRA, one
//!   atomic cell per tenant, sharded and bounded) for work counted in
//!   requests rather than tokens.
//! * [`FairScheduler`] — weighted fair queuing across tenants, interactive
//!   before batch within a tenant, bounded concurrency per tenant.
//! * [`ModelGate`] — allowed models and maximum context per tenant context,
//!   a server-derived prefix-cache salt, and usage events through `tracing`
//!   and a [`UsageSink`].
//!
//! A model call typically goes gate → quota → scheduler → call → settle →
//! meter:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use tenant_core::*;
//! use tenant_governance::*;
//!
//! // Platform start-up.
//! let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
//! let authority = issuer.authority(); // every resource admits this issuer's contexts only
//! let hour = Duration::from_secs(3600);
//! let policy = Policy::new(
//!     TenantPolicy::new()
//!         .tenant_limits(Limits::unlimited().tokens_per(1_000_000, hour).requests(10, 2.0))
//!         .models(["small", "large"])?,
//! );
//! let rates = ModelRates::new().with("large", ModelRate::new().output_weight(5));
//! let quotas = Quotas::builder(&authority).policy(policy.clone()).rates(rates.clone()).build()?;
//! let scheduler = FairScheduler::builder(&authority).policy(policy.clone()).capacity(64).build();
//!
//! // Per request.
//! let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("alice")?)
//!     .capabilities(Capabilities::unrestricted().with_token_budget(50_000)).issue()?;
//! let gate = ModelGate::builder(&authority)
//!     .policy(policy)
//!     .rates(rates)
//!     .salt_key(issuer.subkey(Purpose::CacheSalt))
//!     .tenant(&ctx)
//!     .build()?;
//!
//! let call = gate.authorize(&ModelRequest::new("large", 2_000, 400))?;
//! let reservation = quotas.reserve(&ctx, &call.estimate()).await?;   // 2_000 + 5 × 400
//! let permit = scheduler.admit(&ctx, Lane::Interactive).await?;
//! // ... call the model with max_tokens = call.max_output_tokens and call.cache_salt ...
//! drop(permit);
//! let used = Usage::new(2_000, 150);
//! reservation.settle(used).await?;
//! let event = gate.record_usage("large", used)?;
//! assert_eq!(event.weighted_tokens, 2_750);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod error;
mod fail_open;
mod in_process;
mod ledger;
mod model_gate;
mod policy;
mod policy_config;
mod pricing;
mod quota;
#[cfg(feature = "redis")]
mod redis_admission;
#[cfg(feature = "redis")]
mod redis_batch;
#[cfg(feature = "redis")]
mod redis_batcher;
#[cfg(feature = "redis")]
mod redis_conn;
#[cfg(feature = "redis")]
mod redis_instances;
#[cfg(feature = "redis")]
mod redis_layout;
#[cfg(feature = "redis")]
mod redis_ledger;
mod request_rate;
mod scheduler;
mod telemetry;
mod usage;

pub use error::{Error, Result};
pub use in_process::{
    InProcessLedger, InProcessLedgerBuilder, DEFAULT_CAPACITY, DEFAULT_MAX_KEYS_PER_TENANT,
    DEFAULT_SHARDS,
};
pub use ledger::{
    Bound, Hold, HoldRequest, Ledger, LevelKey, LevelSpec, LevelUsage, QuotaLevel, Resource,
};
pub use model_gate::{
    AuthorizedCall, CacheSalt, ModelGate, ModelGateBuilder, ModelRequest, USAGE_TARGET,
};
pub use policy::{FailureMode, Limits, PeriodBudget, Policy, RateLimit, TenantPolicy};
pub use pricing::{Amount, Estimate, ModelRate, ModelRates, Usage, MAX_AMOUNT};
pub use quota::{
    Quotas, QuotasBuilder, Reservation, Settlement, TenantQuota, TenantQuotaBuilder,
    DEFAULT_HOLD_TTL,
};
#[cfg(feature = "redis")]
pub use redis_ledger::{
    RedisLedger, RedisLedgerBuilder, DEFAULT_MAX_PENDING_PER_TENANT, DEFAULT_PREFIX,
};
pub use request_rate::{RequestRateLimiter, RequestRateLimiterBuilder};
pub use scheduler::{FairScheduler, FairSchedulerBuilder, Lane, SchedulerPermit};
pub use usage::{UsageEvent, UsageSink};
