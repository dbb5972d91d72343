//! [`RetrievalOperator`]: the one public path to operator powers — raw
//! inspection, dropping collections, leak drills — and it is audited.
//!
//! An operator handle is opened from a context that the platform's
//! authority admits *and* whose tenant is the platform's configured
//! operator tenant ([`RetrievalBuilder::operator_tenant`](crate::RetrievalBuilder::operator_tenant)).
//! Such a context can only be minted by whoever holds the platform's
//! [`ContextIssuer`](tenant_core::ContextIssuer) (signing power); holding a
//! [`Retrieval`] (which only verifies) is not enough. Every action
//! re-admits the context (so revoking it stops the handle), needs the
//! context's collection capability for the collection it touches, and
//! emits a `tenant_audit` event naming the operator, the action, the
//! collection and the tenant acted on.

use std::fmt;

use serde_json::{json, Map, Value};
use tenant_core::{TenantContext, TenantId};
use uuid::Uuid;

use crate::backend::Place;
use crate::error::{Error, LeakReason, Result};
use crate::filter::{Node, ScopedFilter};
use crate::guard;
use crate::health::CollectionHealth;
use crate::point::{
    point_id, StoredPoint, DOC_ID_FIELD, META_FIELD, TAG_FIELD, TENANT_FIELD, TEXT_FIELD,
};
use crate::retrieval::Retrieval;

/// One stored point as the store holds it, with the verdict of the per-hit
/// check for its tenant.
#[derive(Clone, Debug, PartialEq)]
pub struct InspectedPoint {
    /// Point id.
    pub id: Uuid,
    /// The payload as stored (sealed collections: still sealed).
    pub payload: Map<String, Value>,
    /// `Ok` if the point passes the check a read would apply.
    pub verdict: std::result::Result<(), LeakReason>,
}

/// What a [leak drill](RetrievalOperator::leak_drill) found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeakDrill {
    /// Logical collection.
    pub collection: String,
    /// The tenant whose scope the canary was planted in.
    pub tenant: TenantId,
    /// Where it was planted (the physical collection, and in the shard-key
    /// layout the shard keys the request named).
    pub physical: String,
    /// The canary's point id.
    pub canary: Uuid,
    /// The canary matched the tenant's scope (the store returned it to a
    /// scoped read), so only the per-hit check could stop it.
    pub reached_scope: bool,
    /// What the per-hit check said; `None` would mean a planted point
    /// passes as the tenant's own.
    pub detected: Option<LeakReason>,
    /// The canary was deleted again.
    pub removed: bool,
}

/// An audited handle on operator powers: raw inspection, dropping
/// collections, leak drills.
///
/// Opened by [`Retrieval::operator`] from a context that the platform's
/// authority admits *and* whose tenant is the platform's configured
/// operator tenant ([`RetrievalBuilder::operator_tenant`](crate::RetrievalBuilder::operator_tenant)).
/// Such a context can only be minted by whoever holds the platform's
/// [`ContextIssuer`](tenant_core::ContextIssuer); holding a [`Retrieval`]
/// (which only verifies) is not enough. Every action re-admits the context
/// (so revoking it stops the handle), needs the context's collection
/// capability for the collection it touches, and emits a `tenant_audit`
/// event naming the operator, the action, the collection and the tenant
/// acted on.
#[derive(Clone)]
pub struct RetrievalOperator {
    retrieval: Retrieval,
    ctx: TenantContext,
}

impl fmt::Debug for RetrievalOperator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetrievalOperator")
            .field("principal", self.ctx.principal())
            .field("agent", self.ctx.agent())
            .finish_non_exhaustive()
    }
}

impl RetrievalOperator {
    pub(crate) fn open(retrieval: Retrieval, ctx: &TenantContext) -> Result<Self> {
        let refused = |err: Error| {
            ctx.deny("retrieval.operator.open", "*", &err);
            Err(err)
        };
        if let Err(e) = retrieval.admit(ctx) {
            return refused(e);
        }
        match retrieval.inner.operator_tenant {
            None => refused(Error::NotAnOperator(
                "this platform has no operator tenant configured",
            )),
            Some(t) if t != ctx.tenant() => refused(Error::NotAnOperator(
                "the context is not for the platform's operator tenant",
            )),
            Some(_) => {
                ctx.audit_allowed("retrieval.operator.open", "*");
                Ok(Self {
                    retrieval,
                    ctx: ctx.clone(),
                })
            }
        }
    }

    /// The operator's context.
    pub fn context(&self) -> &TenantContext {
        &self.ctx
    }

    /// Admits the context again, checks the collection capability, and
    /// audits the action.
    fn authorize(&self, action: &str, collection: &str, subject: &str) -> Result<()> {
        let resource = format!("{collection}/{subject}");
        let result = self.retrieval.admit(&self.ctx).and_then(|()| {
            if collection == "*" || self.ctx.capabilities().collections().allows(collection) {
                Ok(())
            } else {
                Err(Error::CollectionNotAllowed(collection.to_owned()))
            }
        });
        match &result {
            Ok(()) => self.ctx.audit_allowed(action, &resource),
            Err(e) => self.ctx.deny(action, &resource, e),
        }
        result
    }

    /// Isolation health (point counts, tenant index) of every physical
    /// collection of this platform. Reads no payloads.
    pub async fn health(&self) -> Result<Vec<CollectionHealth>> {
        self.authorize("retrieval.operator.health", "*", "*")?;
        let prefix = format!("{}_", self.retrieval.naming().prefix());
        self.retrieval.inner.store.health(&prefix).await
    }

    /// Up to `limit` (1..=[`MAX_LIMIT`](crate::MAX_LIMIT)) of `tenant`'s
    /// stored points in `collection`, raw, each with the verdict of the
    /// per-hit check (what investigating a quarantine alarm needs).
    pub async fn inspect(
        &self,
        collection: &str,
        tenant: TenantId,
        limit: usize,
    ) -> Result<Vec<InspectedPoint>> {
        self.authorize(
            "retrieval.operator.inspect",
            collection,
            &tenant.to_string(),
        )?;
        if limit == 0 || limit > crate::MAX_LIMIT {
            return Err(Error::invalid(
                "limit",
                format!("{limit} is not in 1..={}", crate::MAX_LIMIT),
            ));
        }
        let spec = self.retrieval.spec(collection)?;
        let keys = self.retrieval.tenant_keys(tenant, &spec)?;
        let place = self.place(collection, tenant);
        if !self
            .retrieval
            .inner
            .store
            .collection_exists(&place.collection)
            .await?
        {
            return Ok(Vec::new());
        }
        let page = self
            .retrieval
            .inner
            .store
            .scroll(
                &place,
                &ScopedFilter::tenant_only(tenant),
                None,
                limit,
                false,
            )
            .await?;
        Ok(page
            .points
            .into_iter()
            .map(|p| InspectedPoint {
                verdict: guard::verify_point(tenant, &keys, &p),
                id: p.id,
                payload: p.payload,
            })
            .collect())
    }

    /// Drops every physical collection of the logical `collection` (the
    /// Pool collection and every Silo collection), with all tenants' points.
    /// Returns the names dropped. Clients recreate empty collections on
    /// their next write.
    pub async fn drop_collection(&self, collection: &str) -> Result<Vec<String>> {
        self.authorize("retrieval.operator.drop_collection", collection, "*")?;
        self.retrieval.spec(collection)?;
        let naming = self.retrieval.naming();
        let (pool, sharded) = (naming.pool(collection), naming.sharded(collection));
        let silo_prefix = naming.silo_prefix(collection);
        let store = &self.retrieval.inner.store;
        let mut dropped = Vec::new();
        for h in store
            .health(&format!("{}_{collection}_", naming.prefix()))
            .await?
        {
            let name = h.physical_name;
            let silo = name.strip_prefix(&silo_prefix).is_some_and(|rest| {
                rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit())
            });
            if name == pool || name == sharded || silo {
                self.retrieval.forget_collection(&name);
                store.drop_collection(&name).await?;
                dropped.push(name);
            }
        }
        Ok(dropped)
    }

    /// Plants a canary in `tenant`'s scope of `collection` — the right
    /// tenant field and a derived id, but no key — checks that the
    /// tenant-scoped store hands it back and that the per-hit check
    /// catches it, then deletes it.
    ///
    /// While it exists, the tenant's own reads that meet the canary
    /// quarantine it and raise the `tenant_audit` alarm: the drill
    /// exercises the live path.
    pub async fn leak_drill(&self, collection: &str, tenant: TenantId) -> Result<LeakDrill> {
        self.authorize(
            "retrieval.operator.leak_drill",
            collection,
            &tenant.to_string(),
        )?;
        let spec = self.retrieval.spec(collection)?;
        let keys = self.retrieval.tenant_keys(tenant, &spec)?;
        let place = self.place(collection, tenant);
        self.retrieval.ensure(&place, &spec).await?;

        let doc_id = format!("leak-drill-{}", Uuid::new_v4().simple());
        let canary = point_id(tenant, &doc_id);
        let mut vector = vec![0.0f32; spec.dims()];
        vector[0] = 1.0;
        let payload = match json!({
            TENANT_FIELD: tenant.to_string(),
            DOC_ID_FIELD: doc_id,
            TEXT_FIELD: "leak drill canary",
            META_FIELD: {},
            TAG_FIELD: "bGVhay1kcmlsbC1jYW5hcnk",
        }) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let store = &self.retrieval.inner.store;
        store
            .upsert(
                &place,
                vec![StoredPoint {
                    id: canary,
                    vector: vector.clone(),
                    payload,
                }],
            )
            .await?;

        let canary_scope = ScopedFilter::narrowed(tenant, Node::HasId(vec![canary]));
        let probe = store.scroll(&place, &canary_scope, None, 1, false).await;
        let removed = store.delete(&place, &canary_scope).await.is_ok()
            && store.count(&place, &canary_scope).await? == 0;
        let hit = probe?.points.into_iter().find(|p| p.id == canary);
        let detected = hit
            .as_ref()
            .and_then(|p| guard::verify_point(tenant, &keys, p).err());
        let report = LeakDrill {
            collection: collection.to_owned(),
            tenant,
            physical: place.to_string(),
            canary,
            reached_scope: hit.is_some(),
            detected,
            removed,
        };
        self.ctx.audit_allowed(
            "retrieval.operator.leak_drill.result",
            &format!(
                "{collection}/{tenant}: reached_scope={} detected={:?} removed={}",
                report.reached_scope, report.detected, report.removed
            ),
        );
        Ok(report)
    }

    fn place(&self, collection: &str, tenant: TenantId) -> Place {
        let tier = self.retrieval.view(tenant, None, collection).tier;
        self.retrieval.place(collection, tenant, tier)
    }
}
