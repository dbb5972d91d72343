//! [`Retrieval`]: the platform-wide side — backend, collections, tiers,
//! keys and the routing table.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, RwLock};

use tenant_core::{IsolationTier, KeyProvider, TenantContext, TenantId, TierResolver};
use tokio::sync::{OwnedRwLockReadGuard, RwLock as AsyncRwLock};

use crate::backend::{CollectionLayout, RetrievalBackend, RouteEntry};
use crate::collection::{CollectionSpec, Naming};
use crate::error::{Error, Result};

/// Per (tenant, collection) locks that make promotion online and atomic.
///
/// Reads hold `route` (shared) for their whole backend call; writes hold
/// `writes` (shared) and then `route` (shared). A migration holds `writes`
/// exclusively for the copy and takes `route` exclusively only for the
/// switch, so reads are served from the source throughout the copy and
/// from the target after the switch, and no read straddles the two.
#[derive(Default)]
pub(crate) struct Gate {
    pub(crate) route: Arc<AsyncRwLock<()>>,
    pub(crate) writes: Arc<AsyncRwLock<()>>,
}

type RouteKey = (TenantId, String);

pub(crate) struct Inner {
    pub(crate) backend: Arc<dyn RetrievalBackend>,
    pub(crate) specs: HashMap<String, Arc<CollectionSpec>>,
    pub(crate) tiers: Option<Arc<dyn TierResolver>>,
    pub(crate) keys: Option<Arc<dyn KeyProvider>>,
    pub(crate) naming: Naming,
    routes: RwLock<HashMap<RouteKey, IsolationTier>>,
    gates: Mutex<HashMap<RouteKey, Arc<Gate>>>,
    ensured: Mutex<HashSet<String>>,
    route_store: tokio::sync::Mutex<()>,
}

/// The platform-wide retrieval service: a storage backend, the registered
/// collections, how tenants are tiered, and where each tenant's points live.
///
/// Holding a `Retrieval` is platform (operator) power: it makes
/// [`RetrievalClient`](crate::RetrievalClient)s for any context it is
/// handed and moves tenants between tiers. Agents get clients, never this.
///
/// ```
/// # async fn demo() -> tenant_retrieval::Result<()> {
/// use tenant_core::{IsolationTier, StaticTiers};
/// use tenant_retrieval::{CollectionSpec, EdgeBackend, Retrieval};
/// let dir = tempfile::tempdir().unwrap();
/// let retrieval = Retrieval::builder(EdgeBackend::open(dir.path())?)
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
            .field("backend", &self.inner.backend.kind())
            .field("collections", &self.inner.specs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Configures a [`Retrieval`].
#[must_use]
pub struct RetrievalBuilder {
    backend: Arc<dyn RetrievalBackend>,
    specs: HashMap<String, Arc<CollectionSpec>>,
    tiers: Option<Arc<dyn TierResolver>>,
    keys: Option<Arc<dyn KeyProvider>>,
    naming: Naming,
}

impl RetrievalBuilder {
    /// Registers a logical collection.
    pub fn collection(mut self, spec: CollectionSpec) -> Self {
        self.specs.insert(spec.name().to_owned(), Arc::new(spec));
        self
    }

    /// Decides each tenant's tier. Without one, the tier recorded in the
    /// tenant's context is used. Tiers changed by
    /// [`Retrieval::promote`]/[`demote`](Retrieval::demote) are persisted
    /// and take precedence.
    pub fn tiers(mut self, tiers: impl TierResolver) -> Self {
        self.tiers = Some(Arc::new(tiers));
        self
    }

    /// Per-tenant sealing keys (required when a collection is sealed).
    pub fn keys(mut self, keys: impl KeyProvider) -> Self {
        self.keys = Some(Arc::new(keys));
        self
    }

    /// Physical collection naming (default prefix `tr`).
    pub fn naming(mut self, naming: Naming) -> Self {
        self.naming = naming;
        self
    }

    /// Loads the persisted routing table and finishes.
    pub async fn build(self) -> Result<Retrieval> {
        if self.keys.is_none() {
            if let Some(spec) = self.specs.values().find(|s| s.is_sealed()) {
                return Err(Error::Sealing(format!(
                    "collection `{}` is sealed but no key provider was given",
                    spec.name()
                )));
            }
        }
        let routes = self
            .backend
            .load_routes()
            .await?
            .into_iter()
            .map(|r| ((r.tenant, r.collection), r.tier))
            .collect();
        Ok(Retrieval {
            inner: Arc::new(Inner {
                backend: self.backend,
                specs: self.specs,
                tiers: self.tiers,
                keys: self.keys,
                naming: self.naming,
                routes: RwLock::new(routes),
                gates: Mutex::default(),
                ensured: Mutex::default(),
                route_store: tokio::sync::Mutex::new(()),
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
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Retrieval {
    /// Starts configuring a platform on `backend`.
    pub fn builder(backend: impl RetrievalBackend) -> RetrievalBuilder {
        RetrievalBuilder {
            backend: Arc::new(backend),
            specs: HashMap::new(),
            tiers: None,
            keys: None,
            naming: Naming::default(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &dyn RetrievalBackend {
        self.inner.backend.as_ref()
    }

    /// Physical collection naming.
    pub fn naming(&self) -> &Naming {
        &self.inner.naming
    }

    /// A registered collection.
    pub fn collection(&self, name: &str) -> Option<&CollectionSpec> {
        self.inner.specs.get(name).map(|s| s.as_ref())
    }

    pub(crate) fn spec(&self, name: &str) -> Result<Arc<CollectionSpec>> {
        self.inner
            .specs
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownCollection(name.to_owned()))
    }

    /// Where `ctx`'s tenant's points of `collection` live now.
    pub fn tier_of(&self, ctx: &TenantContext, collection: &str) -> IsolationTier {
        self.resolve(ctx, collection)
    }

    pub(crate) fn resolve(&self, ctx: &TenantContext, collection: &str) -> IsolationTier {
        let tenant = ctx.tenant();
        if let Some(t) = self
            .inner
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(tenant, collection.to_owned()))
        {
            return *t;
        }
        match &self.inner.tiers {
            Some(r) => r.tier(tenant),
            None => ctx.tier(),
        }
    }

    pub(crate) fn gate(&self, tenant: TenantId, collection: &str) -> Arc<Gate> {
        lock(&self.inner.gates)
            .entry((tenant, collection.to_owned()))
            .or_default()
            .clone()
    }

    pub(crate) async fn ensure(&self, physical: &str, spec: &CollectionSpec) -> Result<()> {
        if lock(&self.inner.ensured).contains(physical) {
            return Ok(());
        }
        self.inner
            .backend
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

    /// Takes the route lock (shared) and returns the physical collection
    /// of `ctx`'s tenant, created if needed. Hold the guard for the whole
    /// backend call.
    pub(crate) async fn route_for(
        &self,
        gate: &Gate,
        ctx: &TenantContext,
        spec: &CollectionSpec,
    ) -> Result<(OwnedRwLockReadGuard<()>, String)> {
        let guard = gate.route.clone().read_owned().await;
        let tier = self.resolve(ctx, spec.name());
        let physical = self.inner.naming.physical(spec.name(), ctx.tenant(), tier);
        self.ensure(&physical, spec).await?;
        Ok((guard, physical))
    }

    /// Moves `ctx`'s tenant to its own Silo collection for every registered
    /// collection: copy, verify counts, switch routing atomically, delete
    /// the Pool copy. Reads are answered throughout; writes wait for the
    /// switch. Idempotent; a failure before the switch leaves routing on
    /// Pool.
    ///
    /// Takes the tenant's (checked) context rather than a tenant id so the
    /// operation is verified and audited like any other.
    pub async fn promote(&self, ctx: &TenantContext) -> Result<Vec<Migration>> {
        self.move_all(ctx, IsolationTier::Silo).await
    }

    /// The reverse of [`promote`](Self::promote): back into the shared Pool
    /// collection, then the tenant's Silo collection is dropped.
    pub async fn demote(&self, ctx: &TenantContext) -> Result<Vec<Migration>> {
        self.move_all(ctx, IsolationTier::Pool).await
    }

    async fn move_all(&self, ctx: &TenantContext, to: IsolationTier) -> Result<Vec<Migration>> {
        ctx.check()?;
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
                    &format!("{name}: {} points", m.moved),
                ),
                Err(e) => ctx.audit_denied("retrieval.migrate", name, e),
            }
            out.push(result?);
        }
        Ok(out)
    }

    /// Persists and publishes a new route for (tenant, collection).
    pub(crate) async fn switch_route(
        &self,
        tenant: TenantId,
        collection: &str,
        tier: IsolationTier,
    ) -> Result<()> {
        let _g = self.inner.route_store.lock().await;
        let mut table: Vec<RouteEntry> = {
            let routes = self.inner.routes.read().unwrap_or_else(|e| e.into_inner());
            routes
                .iter()
                .filter(|((t, c), _)| !(*t == tenant && c == collection))
                .map(|((t, c), tier)| RouteEntry {
                    tenant: *t,
                    collection: c.clone(),
                    tier: *tier,
                })
                .collect()
        };
        table.push(RouteEntry {
            tenant,
            collection: collection.to_owned(),
            tier,
        });
        table.sort_by(|a, b| (a.tenant, &a.collection).cmp(&(b.tenant, &b.collection)));
        self.inner.backend.store_routes(&table).await?;
        self.inner
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((tenant, collection.to_owned()), tier);
        Ok(())
    }

    pub(crate) fn forget_ensured(&self, physical: &str) {
        lock(&self.inner.ensured).remove(physical);
    }
}
