//! [`ModelGate`]: which models a tenant context may call, with how much
//! context, under which prefix-cache salt, and metering of what it used.
//!
//! **Cache salt.** Providers and inference servers that share a prompt
//! prefix cache across requests leak timing (and sometimes content) between
//! whoever shares the cache key. The gate derives a per-tenant salt server
//! side: HMAC-SHA256 under the tenant-core subkey for
//! [`Purpose::CacheSalt`](tenant_core::Purpose::CacheSalt) over a
//! length-prefixed encoding of (domain tag, tenant id, optional scope), so no
//! two (tenant, scope) pairs can produce the same input. Any salt the caller
//! supplies is stripped and ignored.

use std::sync::Arc;
use std::time::SystemTime;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tenant_core::{PlatformAuthority, Purpose, Scope, Scoped, Subkey, TenantContext, WantsTenant};

use crate::error::{Error, Result};
use crate::policy::Policy;
use crate::pricing::{Estimate, ModelRates, Usage};
use crate::usage::{UsageEvent, UsageSink};

const SALT_DOMAIN: &[u8] = b"tenant-governance/cache-salt/v1";

/// A per-tenant prefix-cache salt (64 lowercase hex characters).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CacheSalt(String);

impl CacheSalt {
    /// The salt text to pass to the provider or inference server.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for CacheSalt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheSalt({}…)", self.0.get(..8).unwrap_or(""))
    }
}

/// A model call as the caller asks for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelRequest {
    /// The model.
    pub model: String,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output cap.
    pub max_output_tokens: u64,
    /// Optional cache scope within the tenant (e.g. a workspace), part of
    /// the salt derivation.
    pub cache_scope: Option<String>,
    /// A salt the caller supplied; always stripped and ignored.
    pub cache_salt: Option<String>,
}

impl ModelRequest {
    /// A request for `model`.
    pub fn new(model: impl Into<String>, input_tokens: u64, max_output_tokens: u64) -> Self {
        Self {
            model: model.into(),
            input_tokens,
            max_output_tokens,
            cache_scope: None,
            cache_salt: None,
        }
    }

    /// Sets the cache scope.
    pub fn cache_scope(mut self, scope: impl Into<String>) -> Self {
        self.cache_scope = Some(scope.into());
        self
    }

    /// Sets a caller salt (which the gate ignores; for pass-through APIs).
    pub fn caller_salt(mut self, salt: impl Into<String>) -> Self {
        self.cache_salt = Some(salt.into());
        self
    }
}

/// A request the gate allowed: the model, the output cap to enforce and the
/// server-derived salt to use.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizedCall {
    /// The model.
    pub model: String,
    /// Input tokens.
    pub input_tokens: u64,
    /// Output cap: pass it to the model as `max_tokens`.
    pub max_output_tokens: u64,
    /// The salt to send; any caller salt has been discarded.
    pub cache_salt: CacheSalt,
}

impl AuthorizedCall {
    /// The estimate to reserve for this call.
    pub fn estimate(&self) -> Estimate {
        Estimate::new(
            self.model.clone(),
            self.input_tokens,
            self.max_output_tokens,
        )
    }
}

#[derive(Clone)]
struct Platform {
    authority: PlatformAuthority,
    policy: Arc<Policy>,
    rates: Arc<ModelRates>,
    salt_key: Option<Arc<Subkey>>,
    sink: Option<Arc<dyn UsageSink>>,
}

/// The model gate of one tenant context.
///
/// 1. `ModelGate::builder(&issuer.authority())` — state [`WantsTenant`];
/// 2. `.policy(..)`, `.rates(..)`, `.salt_key(issuer.subkey(Purpose::CacheSalt))`,
///    `.sink(..)` — platform-wide, any state;
/// 3. `.tenant(&ctx)` — moves to [`Scoped`];
/// 4. `.build()` — only in `Scoped`; checks the context.
///
/// ```
/// use tenant_core::*;
/// use tenant_governance::{ModelGate, ModelRequest, Policy, TenantPolicy};
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let ctx = issuer.context().tenant(TenantId::random()).principal(PrincipalId::new("alice")?)
///     .capabilities(Capabilities::none().with_models(["small", "large"])?).issue()?;
/// let policy = Policy::new(TenantPolicy::new().models(["small"])?);
/// let gate = ModelGate::builder(&issuer.authority())
///     .policy(policy)
///     .salt_key(issuer.subkey(Purpose::CacheSalt))
///     .tenant(&ctx)
///     .build()?;
/// let call = gate.authorize(&ModelRequest::new("small", 1_000, 200).caller_salt("evil"))?;
/// assert_ne!(call.cache_salt.as_str(), "evil");
/// assert!(gate.authorize(&ModelRequest::new("large", 10, 10)).is_err()); // not in the tenant policy
/// # Ok::<(), tenant_governance::Error>(())
/// ```
#[derive(Clone)]
pub struct ModelGate {
    platform: Platform,
    ctx: TenantContext,
    models: Scope,
    max_context: u64,
}

impl std::fmt::Debug for ModelGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelGate")
            .field("tenant", &self.ctx.tenant())
            .field("models", &self.models)
            .field("max_context", &self.max_context)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ModelGate`]; see its docs for the steps.
#[must_use]
pub struct ModelGateBuilder<S> {
    platform: Platform,
    state: S,
}

impl<S> ModelGateBuilder<S> {
    /// Tier defaults and overrides (models, max context).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.platform.policy = Arc::new(policy);
        self
    }

    /// A policy shared with other components.
    pub fn shared_policy(mut self, policy: Arc<Policy>) -> Self {
        self.platform.policy = policy;
        self
    }

    /// Burndown multipliers and prices for usage events.
    pub fn rates(mut self, rates: ModelRates) -> Self {
        self.platform.rates = Arc::new(rates);
        self
    }

    /// The key salts are derived with: `issuer.subkey(Purpose::CacheSalt)`.
    pub fn salt_key(mut self, key: Subkey) -> Self {
        self.platform.salt_key = Some(Arc::new(key));
        self
    }

    /// Where usage events go besides `tracing`.
    pub fn sink(mut self, sink: Arc<dyn UsageSink>) -> Self {
        self.platform.sink = Some(sink);
        self
    }
}

impl ModelGateBuilder<WantsTenant> {
    /// Scopes the gate to `ctx`.
    pub fn tenant(self, ctx: &TenantContext) -> ModelGateBuilder<Scoped> {
        ModelGateBuilder {
            platform: self.platform,
            state: Scoped::new(ctx),
        }
    }
}

impl ModelGateBuilder<Scoped> {
    /// Admits the context (issued under the gate's authority, valid now),
    /// checks the salt key, and builds the gate.
    ///
    /// # Errors
    ///
    /// [`Error::Context`] (including
    /// [`tenant_core::Error::ForeignAuthority`]);
    /// [`Error::InvalidConfiguration`] when the salt key is missing or was
    /// derived for another purpose.
    pub fn build(self) -> Result<ModelGate> {
        match &self.platform.salt_key {
            Some(k) if k.purpose() == Purpose::CacheSalt => {}
            Some(_) => {
                return Err(Error::InvalidConfiguration(
                    "the salt key must be derived for Purpose::CacheSalt".into(),
                ))
            }
            None => {
                return Err(Error::InvalidConfiguration(
                    "ModelGate needs .salt_key(issuer.subkey(Purpose::CacheSalt))".into(),
                ))
            }
        }
        let ctx = self.state.into_admitted_context(&self.platform.authority)?;
        Ok(ModelGate::scoped(self.platform, ctx))
    }
}

impl ModelGate {
    /// Starts building a gate for contexts issued under `authority`
    /// (`issuer.authority()`) only.
    pub fn builder(authority: &PlatformAuthority) -> ModelGateBuilder<WantsTenant> {
        ModelGateBuilder {
            platform: Platform {
                authority: authority.clone(),
                policy: Arc::new(Policy::default()),
                rates: Arc::new(ModelRates::default()),
                salt_key: None,
                sink: None,
            },
            state: WantsTenant,
        }
    }

    fn scoped(platform: Platform, ctx: TenantContext) -> Self {
        let policy = platform.policy.for_context(&ctx);
        let models = policy.models.intersect(ctx.capabilities().models());
        let max_context = policy.max_context_tokens;
        Self {
            platform,
            ctx,
            models,
            max_context,
        }
    }

    /// The gate's context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// Models this context may call: the tenant policy ∩ the context's
    /// capabilities.
    pub fn allowed_models(&self) -> &Scope {
        &self.models
    }

    /// Largest input + output of one call.
    pub fn max_context_tokens(&self) -> u64 {
        self.max_context
    }

    /// Checks a request: context valid, model allowed, context length within
    /// the tenant's maximum. Strips any caller salt and attaches the
    /// server-derived one.
    ///
    /// # Errors
    ///
    /// [`Error::Context`], [`Error::ModelNotAllowed`],
    /// [`Error::ContextTooLong`]; each is also a `tenant_audit` event.
    pub fn authorize(&self, request: &ModelRequest) -> Result<AuthorizedCall> {
        let span = tenant_core::operation_span!(
            "model.authorize",
            &self.ctx,
            gen_ai.request.model = request.model.as_str(),
        );
        let _entered = span.enter();
        let result = self.authorize_in_span(request);
        if let Err(e) = &result {
            self.ctx.deny("model.call", &request.model, e);
            tenant_core::telemetry::record_error(&span, e);
        }
        result
    }

    fn authorize_in_span(&self, request: &ModelRequest) -> Result<AuthorizedCall> {
        self.platform.authority.admit(&self.ctx)?;
        if !self.models.allows(&request.model) {
            return Err(Error::ModelNotAllowed {
                model: request.model.clone(),
            });
        }
        let requested = request
            .input_tokens
            .saturating_add(request.max_output_tokens);
        if requested > self.max_context {
            return Err(Error::ContextTooLong {
                requested,
                max: self.max_context,
            });
        }
        if request.cache_salt.is_some() {
            tracing::debug!(model = %request.model, "caller-supplied cache salt stripped");
        }
        self.ctx.audit_allowed("model.call", &request.model);
        Ok(AuthorizedCall {
            model: request.model.clone(),
            input_tokens: request.input_tokens,
            max_output_tokens: request.max_output_tokens,
            cache_salt: self.derive_salt(request.cache_scope.as_deref())?,
        })
    }

    /// The tenant's prefix-cache salt, optionally for a scope within the
    /// tenant. Same tenant and scope → same salt, in every process holding
    /// the same master key.
    ///
    /// # Errors
    ///
    /// [`Error::Context`].
    pub fn cache_salt(&self, scope: Option<&str>) -> Result<CacheSalt> {
        self.platform.authority.admit(&self.ctx)?;
        self.derive_salt(scope)
    }

    fn derive_salt(&self, scope: Option<&str>) -> Result<CacheSalt> {
        let key = self
            .platform
            .salt_key
            .as_ref()
            .ok_or_else(|| Error::InvalidConfiguration("no salt key".into()))?;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.expose_bytes())
            .map_err(|_| Error::InvalidConfiguration("salt key length".into()))?;
        let field = |mac: &mut Hmac<Sha256>, bytes: &[u8]| {
            mac.update(&(bytes.len() as u64).to_be_bytes());
            mac.update(bytes);
        };
        field(&mut mac, SALT_DOMAIN);
        field(&mut mac, self.ctx.tenant().as_bytes());
        match scope {
            None => mac.update(&[0]),
            Some(s) => {
                mac.update(&[1]);
                field(&mut mac, s.as_bytes());
            }
        }
        Ok(CacheSalt(hex::encode(mac.finalize().into_bytes())))
    }

    /// Meters a finished call: emits a `tracing` event (target
    /// `tenant_usage`) and hands the event to the sink.
    ///
    /// # Errors
    ///
    /// [`Error::ModelNotAllowed`] for a model this gate would not have
    /// authorized. The context is not re-checked: a call that happened is
    /// metered even if the context expired meanwhile.
    pub fn record_usage(&self, model: &str, usage: Usage) -> Result<UsageEvent> {
        if !self.models.allows(model) {
            return Err(Error::ModelNotAllowed {
                model: model.to_owned(),
            });
        }
        let rate = self.platform.rates.rate(model);
        let event = UsageEvent {
            tenant: self.ctx.tenant(),
            principal: self.ctx.principal().clone(),
            lineage: self.ctx.lineage().to_vec(),
            model: model.to_owned(),
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            input_multiplier: rate.input_multiplier(),
            output_multiplier: rate.output_multiplier(),
            weighted_tokens: rate.weighted_tokens(usage.input_tokens, usage.output_tokens),
            cost_micros: rate.cost_micros(usage.input_tokens, usage.output_tokens),
            at: SystemTime::now(),
        };
        let lineage = event
            .lineage
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join("/");
        tracing::info!(
            target: USAGE_TARGET,
            parent: &self.ctx.span(),
            tenant_id = %event.tenant,
            lineage = %lineage,
            model = %event.model,
            input_tokens = event.input_tokens,
            output_tokens = event.output_tokens,
            input_multiplier = event.input_multiplier,
            output_multiplier = event.output_multiplier,
            weighted_tokens = event.weighted_tokens,
            cost_micros = event.cost_micros,
            "model usage"
        );
        if let Some(sink) = &self.platform.sink {
            sink.record(&event);
        }
        Ok(event)
    }

    /// A gate for a sub-agent's context, which must descend from this one.
    /// The child's allowed models are recomputed from its own capabilities.
    ///
    /// # Errors
    ///
    /// [`tenant_core::Error::NotDescendant`],
    /// [`tenant_core::Error::ForeignAuthority`] and other context errors.
    pub fn delegate(&self, child: &TenantContext) -> Result<ModelGate> {
        self.platform.authority.admit(child)?;
        self.ctx.check_descendant(child)?;
        Ok(ModelGate::scoped(self.platform.clone(), child.clone()))
    }
}

/// The `tracing` target of usage events.
pub const USAGE_TARGET: &str = "tenant_usage";
