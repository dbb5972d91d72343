//! [`Quotas`]: reserve before a call, settle after, release on drop.

use std::sync::Arc;
use std::time::Duration;

use tenant_core::operation_span;
use tenant_core::telemetry::traced;
use tenant_core::{PlatformAuthority, Scoped, TenantContext, WantsTenant};

use crate::telemetry::{count_refusal, timed};

use crate::error::{Error, Result};
use crate::fail_open::FailOpenJournal;
use crate::in_process::InProcessLedger;
use crate::ledger::{
    Bound, Hold, HoldRequest, Ledger, LevelKey, LevelSpec, LevelUsage, QuotaLevel,
};
use crate::policy::{FailureMode, Limits, Policy, TenantPolicy};
use crate::pricing::{Amount, Estimate, ModelRate, ModelRates, Usage};

/// Default lifetime of a hold nobody settles or releases.
pub const DEFAULT_HOLD_TTL: Duration = Duration::from_secs(600);

struct Inner {
    ledger: Arc<dyn Ledger>,
    policy: Policy,
    rates: ModelRates,
    hold_ttl: Duration,
    authority: PlatformAuthority,
    fail_open: FailOpenJournal,
}

/// Platform-wide quota service: a [`Ledger`], a [`Policy`] and
/// [`ModelRates`]. Cheap to clone.
///
/// Every call is reserved before it happens, at every level that applies to
/// the context: the platform, the tenant, the agent, the context's own token
/// budget and the budget of every ancestor context (which must have been
/// registered, see [`Quotas::register`]). A reservation that would pass any
/// limit is refused with [`Error::QuotaExceeded`] and changes nothing.
///
/// It admits only contexts issued under the [`PlatformAuthority`] it was
/// built with; any other context is refused with
/// [`tenant_core::Error::ForeignAuthority`] (as [`Error::Context`]) before
/// the ledger is touched.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tenant_core::*;
/// use tenant_governance::{Estimate, Quotas, Usage};
///
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::unrestricted().with_token_budget(10_000)).issue()?;
/// // In-process ledger, unlimited policy, contexts of this issuer only.
/// let quotas = Quotas::builder(&issuer.authority()).build()?;
///
/// let reservation = quotas.reserve(&ctx, &Estimate::new("small", 1_000, 500)).await?;
/// // ... call the model with max_tokens = 500 ...
/// let settled = reservation.settle(Usage::new(1_000, 120)).await?;
/// assert_eq!(settled.charged.tokens, 1_120);
///
/// let too_big = quotas.reserve(&ctx, &Estimate::new("small", 9_000, 1_000)).await;
/// assert!(matches!(too_big, Err(tenant_governance::Error::QuotaExceeded { .. })));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Quotas {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Quotas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Quotas")
            .field("hold_ttl", &self.inner.hold_ttl)
            .finish_non_exhaustive()
    }
}

/// Configures [`Quotas`].
#[must_use]
pub struct QuotasBuilder {
    ledger: Option<Arc<dyn Ledger>>,
    policy: Policy,
    rates: ModelRates,
    hold_ttl: Duration,
    authority: PlatformAuthority,
}

impl QuotasBuilder {
    /// The ledger (default: a fresh [`InProcessLedger`]).
    pub fn ledger(mut self, ledger: impl Ledger) -> Self {
        self.ledger = Some(Arc::new(ledger));
        self
    }

    /// A ledger shared with other components.
    pub fn shared_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Limits per tier and tenant (default: unlimited).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Burndown multipliers and prices (default: none; every model burns
    /// tokens at weight 1 and is refused where a cost budget applies, see
    /// [`ModelRates`]).
    pub fn rates(mut self, rates: ModelRates) -> Self {
        self.rates = rates;
        self
    }

    /// How long a hold lives without settlement (default
    /// [`DEFAULT_HOLD_TTL`]); set it above your longest model call.
    pub fn hold_ttl(mut self, ttl: Duration) -> Self {
        self.hold_ttl = ttl.max(Duration::from_millis(1));
        self
    }

    /// Builds the service.
    ///
    /// # Errors
    ///
    /// None today; kept fallible so configuration checks can be added.
    pub fn build(self) -> Result<Quotas> {
        let ledger = self
            .ledger
            .unwrap_or_else(|| Arc::new(InProcessLedger::default()));
        Ok(Quotas {
            inner: Arc::new(Inner {
                ledger,
                policy: self.policy,
                rates: self.rates,
                hold_ttl: self.hold_ttl,
                authority: self.authority,
                fail_open: FailOpenJournal::default(),
            }),
        })
    }
}

fn periodic(b: Option<crate::policy::PeriodBudget>) -> Bound {
    b.map_or(Bound::Unlimited, Bound::Periodic)
}

fn spec(key: LevelKey, limits: &Limits) -> LevelSpec {
    LevelSpec {
        key,
        tokens: periodic(limits.tokens),
        cost: periodic(limits.cost),
        requests: limits.requests,
    }
}

impl Quotas {
    /// Starts configuring a service that admits contexts issued under
    /// `authority` (`issuer.authority()`) only.
    pub fn builder(authority: &PlatformAuthority) -> QuotasBuilder {
        QuotasBuilder {
            ledger: None,
            policy: Policy::default(),
            rates: ModelRates::default(),
            hold_ttl: DEFAULT_HOLD_TTL,
            authority: authority.clone(),
        }
    }

    /// The authority whose contexts this service admits.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.inner.authority
    }

    /// Admits `ctx` (issued under this service's authority, valid now);
    /// audits a refusal.
    fn admit(&self, ctx: &TenantContext, action: &str, resource: &str) -> Result<()> {
        self.inner.authority.admit(ctx).map_err(|e| {
            ctx.deny(action, resource, &e);
            Error::from(e)
        })
    }

    fn ledger_kind(&self) -> &'static str {
        self.inner.ledger.kind()
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The model rates.
    pub fn rates(&self) -> &ModelRates {
        &self.inner.rates
    }

    /// The levels a reservation by `ctx` is checked and charged at, outermost
    /// first. The tenant comes from the verified context only.
    pub fn levels_for(&self, ctx: &TenantContext) -> Vec<LevelSpec> {
        let policy = self.inner.policy.for_context(ctx);
        let tenant = ctx.tenant();
        let until_ms = ctx.expires_at_unix_ms();
        let mut levels = Vec::with_capacity(4 + ctx.ancestors().len());
        let platform = self.inner.policy.platform_limits();
        if platform.is_limited() {
            levels.push(spec(LevelKey::Platform, platform));
        }
        if policy.tenant.is_limited() {
            levels.push(spec(LevelKey::Tenant(tenant), &policy.tenant));
        }
        if policy.agent.is_limited() {
            levels.push(spec(
                LevelKey::Agent(tenant, ctx.agent().clone()),
                &policy.agent,
            ));
        }
        // A context without a budget descends only from contexts without
        // one (delegation narrows), so its ancestors' pools are unlimited.
        if let Some(limit) = ctx.capabilities().token_budget() {
            for ancestor in ctx.ancestors() {
                levels.push(LevelSpec {
                    key: LevelKey::Context(tenant, *ancestor),
                    tokens: Bound::Registered { until_ms },
                    cost: Bound::Unlimited,
                    requests: None,
                });
            }
            levels.push(own_pool(ctx, Some(limit)));
        }
        levels
    }

    /// Reserves `estimate` for a call by `ctx`, at every level.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] for a context that is invalid or was not issued
    /// under this service's authority; [`Error::QuotaExceeded`] when any
    /// level would be passed; [`Error::AmountOutOfRange`] for an estimate
    /// beyond [`MAX_AMOUNT`](crate::MAX_AMOUNT); [`Error::ModelUnpriced`] for a model without a
    /// rate where a cost budget applies; [`Error::AncestorNotRegistered`]
    /// (nothing is reserved in each case); [`Error::Overloaded`] when the
    /// tenant is over its share of the ledger; and
    /// [`Error::LedgerUnavailable`] when the ledger fails and the tenant's
    /// policy fails closed (or its fail-open allowance is spent).
    ///
    /// Runs in a span `quota.reserve` (with `gen_ai.request.model`); a
    /// refusal is counted in `tenant_sdk_quota_refusals_total`.
    pub async fn reserve(&self, ctx: &TenantContext, estimate: &Estimate) -> Result<Reservation> {
        let span = operation_span!(
            "quota.reserve",
            ctx,
            gen_ai.request.model = estimate.model(),
        );
        traced(span, self.reserve_inner(ctx, estimate)).await
    }

    async fn reserve_inner(&self, ctx: &TenantContext, estimate: &Estimate) -> Result<Reservation> {
        self.admit(ctx, "quota.reserve", estimate.model())?;
        let policy: &TenantPolicy = self.inner.policy.for_context(ctx);
        let levels: Arc<[LevelSpec]> = self.levels_for(ctx).into();
        let rate = match self.inner.rates.lookup(estimate.model()) {
            Some(rate) => rate,
            None if levels.iter().any(|l| l.cost != Bound::Unlimited) => {
                let e = Error::ModelUnpriced {
                    model: estimate.model().to_owned(),
                };
                ctx.deny("quota.reserve", estimate.model(), &e);
                return Err(e);
            }
            None => ModelRate::new(),
        };
        let amount = rate
            .amount(estimate.input_tokens(), estimate.max_output_tokens())
            .bounded("the estimate")?;
        let request = HoldRequest {
            levels: Arc::clone(&levels),
            amount,
            ttl: self.inner.hold_ttl,
        };
        let reserved = timed(
            self.ledger_kind(),
            "reserve",
            self.inner.ledger.reserve(&request),
        )
        .await;
        let hold = match reserved {
            Ok(hold) => {
                self.inner.fail_open.ledger_answered(ctx.tenant());
                Held::Ledger(hold)
            }
            Err(Error::LedgerUnavailable { reason, source }) => {
                let FailureMode::Open { allowance } = policy.on_ledger_failure else {
                    let e = Error::LedgerUnavailable { reason, source };
                    ctx.deny("quota.reserve", estimate.model(), &e);
                    return Err(e);
                };
                if !self.inner.fail_open.admit(ctx.tenant(), amount, allowance) {
                    let e = Error::LedgerUnavailable {
                        reason: format!("{reason} (the tenant's fail-open allowance is spent)"),
                        source,
                    };
                    ctx.deny("quota.reserve", estimate.model(), &e);
                    return Err(e);
                }
                ctx.audit_denied(
                    "quota.reserve.unaccounted",
                    estimate.model(),
                    &format_args!(
                        "ledger unavailable, admitted against the fail-open allowance \
                         ({} tokens, {} cost): {reason}",
                        amount.tokens, amount.cost_micros
                    ),
                );
                Held::Unaccounted(levels)
            }
            Err(e) => {
                if matches!(
                    e,
                    Error::QuotaExceeded { .. } | Error::AncestorNotRegistered
                ) {
                    self.inner.fail_open.ledger_answered(ctx.tenant());
                }
                count_refusal(ctx, &e);
                ctx.deny("quota.reserve", estimate.model(), &e);
                return Err(e);
            }
        };
        tracing::debug!(
            model = estimate.model(),
            tokens = amount.tokens,
            cost_micros = amount.cost_micros,
            accounted = matches!(hold, Held::Ledger(_)),
            "quota reserved"
        );
        Ok(Reservation {
            quotas: self.clone(),
            hold: Some(hold),
            ctx: ctx.clone(),
            rate,
            model: estimate.model().to_owned(),
            reserved: amount,
        })
    }

    /// Stores `ctx`'s own pool (its token budget, or that it has none) in
    /// the ledger, so contexts delegated from it draw from its pool even
    /// before it reserves anything itself. A delegated context whose
    /// ancestors were not registered cannot reserve
    /// ([`Error::AncestorNotRegistered`]). [`TenantQuota::delegate`] does
    /// this for you.
    ///
    /// # Errors
    ///
    /// [`Error::Context`], [`Error::Overloaded`], [`Error::LedgerUnavailable`].
    pub async fn register(&self, ctx: &TenantContext) -> Result<()> {
        let span = operation_span!("quota.register", ctx);
        traced(span, async {
            self.admit(ctx, "quota.register", "context pool")?;
            let pool = own_pool(ctx, ctx.capabilities().token_budget());
            timed(
                self.ledger_kind(),
                "register",
                self.inner.ledger.register(&pool),
            )
            .await
        })
        .await
    }

    /// The state of one level for `ctx` (`QuotaLevel::Context` is the
    /// context's own budget).
    ///
    /// # Errors
    ///
    /// [`Error::Context`], [`Error::LedgerUnavailable`].
    pub async fn usage(&self, ctx: &TenantContext, level: QuotaLevel) -> Result<LevelUsage> {
        let span = operation_span!("quota.usage", ctx);
        traced(span, self.usage_inner(ctx, level)).await
    }

    async fn usage_inner(&self, ctx: &TenantContext, level: QuotaLevel) -> Result<LevelUsage> {
        self.admit(ctx, "quota.usage", "usage")?;
        let policy = self.inner.policy.for_context(ctx);
        let tenant = ctx.tenant();
        let spec = match level {
            QuotaLevel::Platform => spec(LevelKey::Platform, self.inner.policy.platform_limits()),
            QuotaLevel::Tenant => spec(LevelKey::Tenant(tenant), &policy.tenant),
            QuotaLevel::Agent => spec(LevelKey::Agent(tenant, ctx.agent().clone()), &policy.agent),
            QuotaLevel::Context => own_pool(ctx, ctx.capabilities().token_budget()),
        };
        timed(self.ledger_kind(), "usage", self.inner.ledger.usage(&spec)).await
    }

    /// Waits until every settlement and release the ledger has deferred so
    /// far is applied ([`Ledger::flush`]). Call it on shutdown, before the
    /// runtime stops: a [`RedisLedger`](crate::RedisLedger) applies them in
    /// the background by default.
    ///
    /// # Errors
    ///
    /// [`Error::LedgerUnavailable`] when the ledger cannot confirm them in
    /// time; they stay queued and are retried.
    pub async fn flush(&self) -> Result<()> {
        self.inner.ledger.flush().await
    }
}

/// The level of `ctx`'s own pool: its lifetime budget, or unlimited.
fn own_pool(ctx: &TenantContext, limit: Option<u64>) -> LevelSpec {
    let until_ms = ctx.expires_at_unix_ms();
    LevelSpec {
        key: LevelKey::Context(ctx.tenant(), ctx.id()),
        tokens: match limit {
            Some(limit) => Bound::Lifetime { limit, until_ms },
            None => Bound::LifetimeUnlimited { until_ms },
        },
        cost: Bound::Unlimited,
        requests: None,
    }
}

/// What a reservation holds.
enum Held {
    /// A hold in the ledger.
    Ledger(Hold),
    /// Nothing in the ledger (admitted against the fail-open allowance):
    /// the levels to charge once the call is settled.
    Unaccounted(Arc<[LevelSpec]>),
}

/// What a settlement charged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// What was charged (the actual usage, weighted).
    pub charged: Amount,
    /// What had been reserved.
    pub reserved: Amount,
    /// Whether the actual usage exceeded the reservation (it is charged in
    /// full regardless; cap the model's output at the estimate to prevent
    /// this).
    pub overrun: bool,
}

/// An amount held at every quota level for one call.
///
/// Settle it with the actual usage after the call, or release it if the
/// call did not happen. Dropping it releases it: in process at once, on
/// Redis through the ledger's background task (and, should the process die
/// first, the hold is charged at its estimate when its lease expires:
/// crashing never costs less than finishing).
#[must_use = "a reservation is released when dropped; settle it after the call"]
pub struct Reservation {
    quotas: Quotas,
    hold: Option<Held>,
    ctx: TenantContext,
    rate: ModelRate,
    model: String,
    reserved: Amount,
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("tenant", &self.ctx.tenant())
            .field("model", &self.model)
            .field("reserved", &self.reserved)
            .field("accounted", &self.is_accounted())
            .finish()
    }
}

impl Reservation {
    /// The amount held.
    pub fn reserved(&self) -> Amount {
        self.reserved
    }

    /// False when the ledger was down and the call was admitted against the
    /// tenant's fail-open allowance (its usage is charged to the ledger
    /// when it is back).
    pub fn is_accounted(&self) -> bool {
        matches!(self.hold, Some(Held::Ledger(_)))
    }

    /// The context it was made for.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// The model it was made for.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Ends the reservation and charges the actual usage. The context is not
    /// re-checked: the call has happened and must be paid for even if the
    /// context expired meanwhile.
    ///
    /// A ledger may defer the charge (a [`RedisLedger`](crate::RedisLedger)
    /// does by default): then this returns once it is queued, and the
    /// ledger applies it before any later operation of this process,
    /// retrying across Redis failures until it is applied exactly once.
    /// [`Quotas::flush`] waits for it. An unaccounted reservation's usage
    /// is handed to the ledger the same way.
    ///
    /// # Errors
    ///
    /// [`Error::AmountOutOfRange`]: the usage is beyond [`MAX_AMOUNT`](crate::MAX_AMOUNT); the
    /// ledger is charged [`MAX_AMOUNT`](crate::MAX_AMOUNT) (every budget the call passed
    /// through is spent) and the hold ends all the same.
    /// [`Error::LedgerUnavailable`]: the usage was not recorded and the hold
    /// stays until it expires, when it is charged at its estimate (only from
    /// a ledger that does not defer, or one whose background task has
    /// stopped).
    pub async fn settle(self, actual: Usage) -> Result<Settlement> {
        let span = operation_span!(
            "quota.settle",
            &self.ctx,
            gen_ai.request.model = self.model.as_str(),
            gen_ai.usage.input_tokens = actual.input_tokens,
            gen_ai.usage.output_tokens = actual.output_tokens,
        );
        traced(span, self.settle_inner(actual)).await
    }

    async fn settle_inner(mut self, actual: Usage) -> Result<Settlement> {
        let usage = self.rate.amount(actual.input_tokens, actual.output_tokens);
        let in_range = usage.bounded("the settled usage");
        let charged = usage.saturated();
        let overrun = usage.exceeds(&self.reserved);
        match self.hold.take() {
            Some(Held::Ledger(hold)) => {
                let ledger = &self.quotas.inner.ledger;
                timed(ledger.kind(), "settle", ledger.settle(hold, charged)).await?;
            }
            Some(Held::Unaccounted(levels)) => self.charge_unaccounted(levels, charged),
            None => {}
        }
        if overrun {
            tracing::warn!(model = %self.model, reserved = self.reserved.tokens,
                charged = usage.tokens, "usage exceeded its reservation");
        }
        in_range?;
        Ok(Settlement {
            charged,
            reserved: self.reserved,
            overrun,
        })
    }

    /// Hands an unaccounted call's usage to the ledger.
    fn charge_unaccounted(&self, levels: Arc<[LevelSpec]>, charged: Amount) {
        let tenant = self.ctx.tenant();
        self.quotas
            .inner
            .fail_open
            .ended(tenant, self.reserved, charged);
        self.ctx.audit_allowed(
            "quota.settle.unaccounted",
            &format!(
                "{}: {} tokens, {} cost queued for the ledger",
                self.model, charged.tokens, charged.cost_micros
            ),
        );
        self.quotas.inner.ledger.charge_detached(levels, charged);
    }

    /// Ends the reservation without charging (the call did not happen).
    /// Deferred like [`Reservation::settle`] on a ledger that defers.
    ///
    /// # Errors
    ///
    /// [`Error::LedgerUnavailable`]: the hold stays until it expires, when
    /// it is charged at its estimate (only from a ledger that does not
    /// defer, or one whose background task has stopped).
    pub async fn release(self) -> Result<()> {
        let span = operation_span!("quota.release", &self.ctx);
        traced(span, self.release_inner()).await
    }

    async fn release_inner(mut self) -> Result<()> {
        match self.hold.take() {
            Some(Held::Ledger(hold)) => {
                let ledger = &self.quotas.inner.ledger;
                timed(ledger.kind(), "release", ledger.release(hold)).await
            }
            Some(Held::Unaccounted(_)) => {
                self.quotas.inner.fail_open.ended(
                    self.ctx.tenant(),
                    self.reserved,
                    Amount::default(),
                );
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        match self.hold.take() {
            Some(Held::Ledger(hold)) => self.quotas.inner.ledger.release_detached(hold),
            Some(Held::Unaccounted(_)) => self.quotas.inner.fail_open.ended(
                self.ctx.tenant(),
                self.reserved,
                Amount::default(),
            ),
            None => {}
        }
    }
}

/// A tenant-scoped quota handle: [`Quotas`] bound to one context.
///
/// 1. `TenantQuota::builder()` — state [`WantsTenant`];
/// 2. `.quotas(&quotas)` — any state;
/// 3. `.tenant(&ctx)` — moves to [`Scoped`];
/// 4. `.build()` — only in `Scoped`; checks the context.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tenant_core::*;
/// use tenant_governance::{Estimate, Quotas, TenantQuota};
/// # let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let root = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::unrestricted().with_token_budget(1_000)).issue()?;
/// let quotas = Quotas::builder(&issuer.authority()).build()?;
/// let handle = TenantQuota::builder().quotas(&quotas).tenant(&root).build()?;
///
/// let sub = root.delegate(AgentId::new("researcher")?).token_budget(800).issue()?;
/// let sub_quota = handle.delegate(&sub).await?; // registers the root's pool
/// let _r = sub_quota.reserve(&Estimate::new("m", 700, 0)).await?;
/// // The root's pool has 300 left, whoever asks.
/// assert!(handle.reserve(&Estimate::new("m", 400, 0)).await.is_err());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct TenantQuota {
    quotas: Quotas,
    ctx: TenantContext,
}

/// Builds a [`TenantQuota`]; see its docs for the steps.
#[must_use]
pub struct TenantQuotaBuilder<S> {
    quotas: Option<Quotas>,
    state: S,
}

impl<S> TenantQuotaBuilder<S> {
    /// The platform's quota service.
    pub fn quotas(mut self, quotas: &Quotas) -> Self {
        self.quotas = Some(quotas.clone());
        self
    }
}

impl TenantQuotaBuilder<WantsTenant> {
    /// Scopes the handle to `ctx`.
    pub fn tenant(self, ctx: &TenantContext) -> TenantQuotaBuilder<Scoped> {
        TenantQuotaBuilder {
            quotas: self.quotas,
            state: Scoped::new(ctx),
        }
    }
}

impl TenantQuotaBuilder<Scoped> {
    /// Admits the context (issued under the quotas' authority, valid now)
    /// and builds the handle.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] (including
    /// [`tenant_core::Error::ForeignAuthority`]);
    /// [`Error::InvalidConfiguration`] without quotas.
    pub fn build(self) -> Result<TenantQuota> {
        let quotas = self
            .quotas
            .ok_or_else(|| Error::InvalidConfiguration("TenantQuota needs .quotas(..)".into()))?;
        let ctx = self.state.into_admitted_context(&quotas.inner.authority)?;
        Ok(TenantQuota { quotas, ctx })
    }
}

impl TenantQuota {
    /// Starts building.
    pub fn builder() -> TenantQuotaBuilder<WantsTenant> {
        TenantQuotaBuilder {
            quotas: None,
            state: WantsTenant,
        }
    }

    /// The handle's context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// [`Quotas::reserve`] for this handle's context.
    ///
    /// # Errors
    ///
    /// As [`Quotas::reserve`].
    pub async fn reserve(&self, estimate: &Estimate) -> Result<Reservation> {
        self.quotas.reserve(&self.ctx, estimate).await
    }

    /// [`Quotas::usage`] for this handle's context.
    ///
    /// # Errors
    ///
    /// As [`Quotas::usage`].
    pub async fn usage(&self, level: QuotaLevel) -> Result<LevelUsage> {
        self.quotas.usage(&self.ctx, level).await
    }

    /// A handle for a sub-agent's context, which must descend from this
    /// one. Registers this context's pool first, so the child draws from
    /// it.
    ///
    /// # Errors
    ///
    /// [`tenant_core::Error::NotDescendant`] or
    /// [`tenant_core::Error::ForeignAuthority`] (as [`Error::Context`]) and
    /// the errors of [`Quotas::register`].
    pub async fn delegate(&self, child: &TenantContext) -> Result<TenantQuota> {
        self.quotas.admit(child, "quota.delegate", "context pool")?;
        self.ctx.check_descendant(child)?;
        self.quotas.register(&self.ctx).await?;
        Ok(TenantQuota {
            quotas: self.quotas.clone(),
            ctx: child.clone(),
        })
    }
}
