//! [`Retrieval`]: the platform-wide side — backend, platform authority,
//! collections, tiers, keys and routes.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tenant_core::{
    IsolationTier, KeyProvider, PlatformAuthority, TenantContext, TenantId, TierResolver,
};

use crate::backend::{CollectionLayout, RetrievalBackend, RouteAuthority, Store};
use crate::collection::{CollectionSpec, Naming};
use crate::error::{Error, Result};
use crate::keys::TenantKeys;
use crate::operator::RetrievalOperator;
use crate::quarantine::{LeakCounter, LeakPolicy};
use crate::route::{still_valid, Access, RouteEntry, RouteTable, RouteView};

/// How often an operation re-runs when other processes keep moving the
/// tenant under it.
const MAX_ROUTE_ATTEMPTS: usize = 4;
/// How often a write waiting for another process's migration re-reads the
/// route.
const MIGRATION_POLL: Duration = Duration::from_millis(50);

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) authority: PlatformAuthority,
    pub(crate) keys: Arc<dyn KeyProvider>,
    pub(crate) specs: HashMap<String, Arc<CollectionSpec>>,
    pub(crate) tiers: Option<Arc<dyn TierResolver>>,
    pub(crate) naming: Naming,
    pub(crate) leak_policy: LeakPolicy,
    pub(crate) leaks: LeakCounter,
    pub(crate) operator_tenant: Option<TenantId>,
    migration_wait: Duration,
    ensured: Mutex<HashSet<String>>,
}

/// The platform-wide retrieval service: a storage backend, the platform
/// authority whose contexts it serves, the registered collections, how
/// tenants are tiered, their keys, and where each tenant's points live.
///
/// A `Retrieval` is safe to hand to request handlers: it reaches tenant
/// data only through a [`RetrievalClient`](crate::RetrievalClient) built
/// from a context issued under its [`PlatformAuthority`], and operator
/// actions need an operator context ([`Retrieval::operator`]). It never
/// exposes its backend.
///
/// ```
/// # async fn demo() -> tenant_retrieval::Result<()> {
/// use tenant_core::*;
/// use tenant_retrieval::{CollectionSpec, EdgeBackend, Retrieval};
/// let issuer = ContextIssuer::new(MasterKey::generate(KeyId::new("k1")?));
/// let dir = tempfile::tempdir().unwrap();
/// let retrieval = Retrieval::builder(EdgeBackend::open(dir.path())?)
///     .authority(issuer.authority())
///     .keys(DerivedKeyProvider::new(MasterKey::generate(KeyId::new("data-1")?)))
///     .collection(CollectionSpec::new("docs", 8)?)
///     .tiers(StaticTiers::new(IsolationTier::Pool))
///     .build()
///     .await?;
/// # let _ = retrieval; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Retrieval {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for Retrieval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retrieval")
            .field("backend", &self.inner.store.kind())
            .field("authority", &self.inner.authority)
            .field("collections", &self.inner.specs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Builder state: the platform authority is still wanted
/// ([`RetrievalBuilder::authority`]).
#[derive(Debug)]
pub struct WantsAuthority;

/// Builder state: the key provider is still wanted
/// ([`RetrievalBuilder::keys`]).
#[derive(Debug)]
pub struct WantsKeys;

/// Builder state: the key provider is set.
pub struct WithKeys(Arc<dyn KeyProvider>);

impl fmt::Debug for WithKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WithKeys")
    }
}

/// Configures a [`Retrieval`]:
///
/// 1. [`Retrieval::builder`] with a backend;
/// 2. [`.authority(issuer.authority())`](Self::authority): only contexts
///    issued under it are served;
/// 3. [`.keys(provider)`](Self::keys): per-tenant keys for leak tags (every
///    collection) and sealing;
/// 4. collections, tiers, naming, leak policy, operator tenant (any order);
/// 5. [`.build()`](RetrievalBuilder::build), available once 2 and 3 are done.
#[must_use]
pub struct RetrievalBuilder<A = WantsAuthority, K = WantsKeys> {
    store: Arc<dyn Store>,
    authority: A,
    keys: K,
    specs: HashMap<String, Arc<CollectionSpec>>,
    tiers: Option<Arc<dyn TierResolver>>,
    naming: Naming,
    leak_policy: LeakPolicy,
    operator_tenant: Option<TenantId>,
    migration_wait: Duration,
}

impl<K> RetrievalBuilder<WantsAuthority, K> {
    /// The platform authority ([`ContextIssuer::authority`](tenant_core::ContextIssuer::authority)):
    /// clients, delegations, promotions and operator handles accept only
    /// contexts issued under it ([`tenant_core::Error::ForeignAuthority`]
    /// otherwise).
    pub fn authority(self, authority: PlatformAuthority) -> RetrievalBuilder<PlatformAuthority, K> {
        RetrievalBuilder {
            store: self.store,
            authority,
            keys: self.keys,
            specs: self.specs,
            tiers: self.tiers,
            naming: self.naming,
            leak_policy: self.leak_policy,
            operator_tenant: self.operator_tenant,
            migration_wait: self.migration_wait,
        }
    }
}

impl<A> RetrievalBuilder<A, WantsKeys> {
    /// Per-tenant keys: every stored point carries a leak tag under its
    /// tenant's key, and sealed collections seal under it. Must be stable
    /// across restarts and identical in every process serving the backend.
    pub fn keys(self, keys: impl KeyProvider) -> RetrievalBuilder<A, WithKeys> {
        RetrievalBuilder {
            store: self.store,
            authority: self.authority,
            keys: WithKeys(Arc::new(keys)),
            specs: self.specs,
            tiers: self.tiers,
            naming: self.naming,
            leak_policy: self.leak_policy,
            operator_tenant: self.operator_tenant,
            migration_wait: self.migration_wait,
        }
    }
}

impl<A, K> RetrievalBuilder<A, K> {
    /// Registers a logical collection.
    pub fn collection(mut self, spec: CollectionSpec) -> Self {
        self.specs.insert(spec.name().to_owned(), Arc::new(spec));
        self
    }

    /// Decides each tenant's tier. Without one, the tier recorded in the
    /// tenant's context is used. Tiers changed by
    /// [`Retrieval::promote`]/[`demote`](Retrieval::demote) are persisted
    /// in the backend and take precedence in every process.
    pub fn tiers(mut self, tiers: impl TierResolver) -> Self {
        self.tiers = Some(Arc::new(tiers));
        self
    }

    /// Physical collection naming (default prefix `tr`).
    pub fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// What to do with a hit that fails the per-hit check (default:
    /// [`LeakPolicy::Quarantine`]).
    pub fn leak_policy(mut self, policy: LeakPolicy) -> Self {
        self.leak_policy = policy;
        self
    }

    /// The tenant whose contexts may open a
    /// [`RetrievalOperator`](crate::RetrievalOperator) (see
    /// [`Retrieval::operator`]). Use a tenant id reserved for the
    /// platform's operators, never a customer's. Without it, no operator
    /// handle can be opened.
    pub fn operator_tenant(mut self, tenant: TenantId) -> Self {
        self.operator_tenant = Some(tenant);
        self
    }

    /// How long a write waits for another process's migration of its
    /// tenant before failing with [`Error::TenantMigrating`] (default 60 s).
    pub fn migration_wait(mut self, wait: Duration) -> Self {
        self.migration_wait = wait;
        self
    }
}

impl RetrievalBuilder<PlatformAuthority, WithKeys> {
    /// Loads the persisted routes and finishes.
    pub async fn build(self) -> Result<Retrieval> {
        let store = self.store;
        let loaded = store.load_routes().await?;
        let table = store.routes().clone();
        match store.route_authority() {
            RouteAuthority::Shared => table.load(loaded),
            RouteAuthority::Local => {
                // This process alone serves the backend, so a migration
                // still marked as running was interrupted by a crash
                // before its switch: its source is intact. Settle it there.
                for mut entry in loaded {
                    if entry.moving_to.take().is_some() {
                        entry.version += 1;
                        table.put(entry.clone());
                        store.store_route(&entry).await?;
                    } else {
                        table.put(entry);
                    }
                }
            }
        }
        Ok(Retrieval {
            inner: Arc::new(Inner {
                store,
                authority: self.authority,
                keys: self.keys.0,
                specs: self.specs,
                tiers: self.tiers,
                naming: self.naming,
                leak_policy: self.leak_policy,
                leaks: LeakCounter::default(),
                operator_tenant: self.operator_tenant,
                migration_wait: self.migration_wait,
                ensured: Mutex::default(),
            }),
        })
    }
}

/// What a promotion or demotion did for one collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Migration {
    /// Logical collection.
    pub collection: String,
    /// Tier the points were on.
    pub from: IsolationTier,
    /// Tier they are on now.
    pub to: IsolationTier,
    /// Points copied and verified.
    pub moved: u64,
    /// Points that failed the per-hit check and were left behind (and
    /// deleted with the source).
    pub quarantined: u64,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Retrieval {
    /// Starts configuring a platform on `backend`.
    pub fn builder(backend: impl RetrievalBackend) -> RetrievalBuilder {
        RetrievalBuilder {
            store: backend.into_store(crate::backend::sealed::Token(())),
            authority: WantsAuthority,
            keys: WantsKeys,
            specs: HashMap::new(),
            tiers: None,
            naming: Naming::default(),
            leak_policy: LeakPolicy::default(),
            operator_tenant: None,
            migration_wait: Duration::from_secs(60),
        }
    }

    /// The authority whose contexts this platform serves.
    pub fn authority(&self) -> &PlatformAuthority {
        &self.inner.authority
    }

    /// Physical collection naming.
    pub fn naming(&self) -> &Naming {
        &self.inner.naming
    }

    /// A registered collection.
    pub fn collection(&self, name: &str) -> Option<&CollectionSpec> {
        self.inner.specs.get(name).map(|s| s.as_ref())
    }

    /// The leak policy.
    pub fn leak_policy(&self) -> LeakPolicy {
        self.inner.leak_policy
    }

    /// How many stored points failed the per-hit check since this platform
    /// was built (each one also raised a `tenant_audit` alarm).
    pub fn quarantined(&self) -> u64 {
        self.inner.leaks.get()
    }

    /// `Ok` if `ctx` was issued under this platform's authority and is
    /// valid now.
    pub(crate) fn admit(&self, ctx: &TenantContext) -> Result<()> {
        Ok(self.inner.authority.admit(ctx)?)
    }

    pub(crate) fn spec(&self, name: &str) -> Result<Arc<CollectionSpec>> {
        self.inner
            .specs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownCollection(name.to_owned()))
    }

    pub(crate) fn tenant_keys(
        &self,
        tenant: TenantId,
        spec: &CollectionSpec,
    ) -> Result<TenantKeys> {
        TenantKeys::new(self.inner.keys.as_ref(), tenant, spec)
    }

    pub(crate) fn routes(&self) -> &RouteTable {
        self.inner.store.routes()
    }

    /// Where `ctx`'s tenant's points of `collection` live now (as this
    /// process last saw it).
    pub fn tier_of(&self, ctx: &TenantContext, collection: &str) -> Result<IsolationTier> {
        self.admit(ctx)?;
        Ok(self.view(ctx.tenant(), Some(ctx), collection).tier)
    }

    fn default_tier(&self, tenant: TenantId, ctx: Option<&TenantContext>) -> IsolationTier {
        match (&self.inner.tiers, ctx) {
            (Some(r), _) => r.tier(tenant),
            (None, Some(ctx)) => ctx.tier(),
            (None, None) => IsolationTier::Pool,
        }
    }

    /// The route this process knows for (`tenant`, `collection`).
    pub(crate) fn view(
        &self,
        tenant: TenantId,
        ctx: Option<&TenantContext>,
        collection: &str,
    ) -> RouteView {
        self.routes()
            .get(tenant, collection)
            .unwrap_or_else(|| RouteView::unrouted(self.default_tier(tenant, ctx)))
    }

    /// The persisted route, read now (and remembered).
    pub(crate) async fn refresh(
        &self,
        tenant: TenantId,
        ctx: Option<&TenantContext>,
        collection: &str,
    ) -> Result<RouteView> {
        if self.inner.store.route_authority() == RouteAuthority::Local {
            return Ok(self.view(tenant, ctx, collection));
        }
        match self.inner.store.fetch_route(tenant, collection).await? {
            Some(entry) => {
                let view = RouteView::of(&entry);
                self.routes().put(entry);
                Ok(view)
            }
            None => Ok(RouteView::unrouted(self.default_tier(tenant, ctx))),
        }
    }

    /// Persists a route entry, then publishes it in this process.
    pub(crate) async fn persist_route(&self, entry: RouteEntry) -> Result<()> {
        let _serial = self.routes().persist.lock().await;
        self.inner.store.store_route(&entry).await?;
        self.routes().put(entry);
        Ok(())
    }

    pub(crate) async fn ensure(&self, physical: &str, spec: &CollectionSpec) -> Result<()> {
        if lock(&self.inner.ensured).contains(physical) {
            return Ok(());
        }
        self.inner
            .store
            .ensure_collection(
                physical,
                CollectionLayout {
                    dims: spec.dims(),
                    distance: spec.distance_kind(),
                },
            )
            .await?;
        lock(&self.inner.ensured).insert(physical.to_owned());
        Ok(())
    }

    pub(crate) fn forget_ensured(&self, physical: &str) {
        lock(&self.inner.ensured).remove(physical);
    }

    /// Runs `op` on the physical collection that holds `ctx`'s tenant's
    /// points of `spec`, so that it is never answered from, or written to,
    /// a location the tenant has left:
    ///
    /// - within this process, it holds the route gate (shared) for the
    ///   whole call, and writes wait for a running migration;
    /// - when other processes share the backend, it re-reads the persisted
    ///   route afterwards and runs again on the new route if the one it
    ///   used is no longer valid ([`still_valid`]); a write that meets
    ///   another process's migration waits for it to finish.
    pub(crate) async fn routed<T, F, Fut>(
        &self,
        ctx: &TenantContext,
        spec: &CollectionSpec,
        access: Access,
        op: F,
    ) -> Result<T>
    where
        F: Fn(String) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let tenant = ctx.tenant();
        let name = spec.name();
        let gate = self.routes().gate(tenant, name);
        let _writes = match access {
            Access::Write => Some(gate.writes.clone().read_owned().await),
            Access::Read => None,
        };
        let shared = self.inner.store.route_authority() == RouteAuthority::Shared;
        for _ in 0..MAX_ROUTE_ATTEMPTS {
            let route = gate.route.clone().read_owned().await;
            let used = self.view(tenant, Some(ctx), name);
            if access == Access::Write && used.moving_to.is_some() {
                drop(route);
                self.await_migration(ctx, name).await?;
                continue;
            }
            let physical = self.inner.naming.physical(name, tenant, used.tier);
            self.ensure(&physical, spec).await?;
            let result = op(physical.clone()).await;
            if result.is_err() {
                self.forget_ensured(&physical);
            }
            if !shared {
                return result;
            }
            let now = self.refresh(tenant, Some(ctx), name).await?;
            drop(route);
            if still_valid(used, now, access) {
                return result;
            }
        }
        Err(Error::RouteUnsettled {
            collection: name.to_owned(),
        })
    }

    /// Waits until no migration of (`ctx`'s tenant, `collection`) is marked
    /// as running.
    async fn await_migration(&self, ctx: &TenantContext, collection: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + self.inner.migration_wait;
        loop {
            let now = self.refresh(ctx.tenant(), Some(ctx), collection).await?;
            if now.moving_to.is_none() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::TenantMigrating {
                    collection: collection.to_owned(),
                });
            }
            tokio::time::sleep(MIGRATION_POLL).await;
        }
    }

    /// Moves `ctx`'s tenant to its own Silo collection for every registered
    /// collection: fence writes, copy (checking every point; failures are
    /// quarantined), verify counts, switch the route atomically, delete the
    /// Pool copy. Reads are answered throughout, in this process and every
    /// other process serving the backend; writes wait for the switch.
    /// Idempotent; a failure before the switch leaves the tenant on Pool.
    ///
    /// Takes the tenant's context (issued under this platform's authority)
    /// rather than a tenant id, so the operation is verified and audited
    /// like any other.
    pub async fn promote(&self, ctx: &TenantContext) -> Result<Vec<Migration>> {
        self.move_all(ctx, IsolationTier::Silo).await
    }

    /// The reverse of [`promote`](Self::promote): back into the shared Pool
    /// collection, then the tenant's Silo collection is dropped.
    pub async fn demote(&self, ctx: &TenantContext) -> Result<Vec<Migration>> {
        self.move_all(ctx, IsolationTier::Pool).await
    }

    async fn move_all(&self, ctx: &TenantContext, to: IsolationTier) -> Result<Vec<Migration>> {
        if let Err(e) = self.admit(ctx) {
            ctx.audit_denied("retrieval.migrate", "*", &e);
            return Err(e);
        }
        let mut names: Vec<&String> = self.inner.specs.keys().collect();
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let spec = self.spec(name)?;
            let result = crate::migration::migrate(self, ctx, &spec, to).await;
            match &result {
                Ok(m) => ctx.audit_allowed(
                    if to == IsolationTier::Silo {
                        "retrieval.promote"
                    } else {
                        "retrieval.demote"
                    },
                    &format!("{name}: {} points, {} quarantined", m.moved, m.quarantined),
                ),
                Err(e) => ctx.audit_denied("retrieval.migrate", name, e),
            }
            out.push(result?);
        }
        Ok(out)
    }

    /// An audited operator handle for `ctx`, which must be issued under
    /// this platform's authority for the configured
    /// [operator tenant](RetrievalBuilder::operator_tenant). Each action
    /// also needs the context's collection capability for the collection it
    /// touches.
    pub fn operator(&self, ctx: &TenantContext) -> Result<RetrievalOperator> {
        RetrievalOperator::open(self.clone(), ctx)
    }
}
