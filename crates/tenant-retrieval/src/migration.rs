//! Moving one tenant's collection between Pool and Silo, online.
//!
//! Every layout follows the same protocol around its own copy and switch:
//!
//! 1. Block the tenant's writes in this process (in-flight ones finish
//!    first) and persist the route as migrating (`moving_to`), which makes
//!    writes in every other process wait.
//! 2. Copy, checking every point exactly as a read would; a point that
//!    fails is quarantined (left behind, counted, alarmed), or aborts the
//!    move in strict mode. Verify the counts.
//! 3. Switch, and persist the new route.
//! 4. Remove the source copy.
//!
//! A failure before the switch persists the route back on the source and
//! removes the partial copy.
//!
//! Collection per tier (edge, server): the copy is a paged scroll and
//! upsert into the target collection; the switch publishes the route under
//! the exclusive route gate, which waits for this process's in-flight reads
//! of the source (other processes re-read the route after each operation).
//!
//! Shard keys (server): reads are routed by the server — to the tenant's
//! key once it exists and is active, else to the fallback key — so the
//! switch is the server's. A promotion creates the tenant's key in the
//! `Partial` state (the server keeps routing to the fallback), has the
//! server replicate the tenant's points to it by filter, and the key turns
//! active when the transfer completes; then the copy is checked (failing
//! points are deleted from it) and counted, and the tenant's points are
//! deleted from the fallback. A demotion copies the tenant's points back
//! into the fallback key, checks the counts, switches the route (writes go
//! to the fallback key from then on) and deletes the tenant's key, which
//! switches the server's routing to the fallback. Reads never create a
//! tenant's key (only writes do), so nothing brings a removed key back.

use tenant_core::{IsolationTier, TenantContext};

use crate::backend::{Layout, Place, Shards};
use crate::collection::CollectionSpec;
use crate::error::{Error, Result};
use crate::filter::{Node, ScopedFilter};
use crate::guard;
use crate::quarantine;
use crate::retrieval::{Migration, Retrieval};
use crate::route::{Gate, RouteEntry};

const PAGE: usize = 256;

pub(crate) async fn migrate(
    retrieval: &Retrieval,
    ctx: &TenantContext,
    spec: &CollectionSpec,
    to: IsolationTier,
) -> Result<Migration> {
    let tenant = ctx.tenant();
    let name = spec.name();
    if retrieval.layout() == Layout::Shared {
        return Err(Error::Migration {
            collection: name.to_owned(),
            reason: "the shared-collection layout has a single tier".into(),
        });
    }
    let gate = retrieval.routes().gate(tenant, name);
    let _writes = gate.writes.clone().write_owned().await;

    let current = retrieval.refresh(tenant, Some(ctx), name).await?;
    let from = current.tier;
    if from == to && current.moving_to.is_none() {
        if retrieval.layout() == Layout::ShardKeys && to == IsolationTier::Pool {
            // A key left behind by a demotion whose cleanup failed would
            // still capture the tenant's reads.
            let key = retrieval.exact_place(name, tenant, IsolationTier::Silo);
            let store = &retrieval.inner.store;
            if let (Shards::Key(k), true) =
                (&key.shards, store.collection_exists(&key.collection).await?)
            {
                store.drop_shard_key(&key.collection, k).await?;
                retrieval.forget_ensured(&key);
            }
        }
        return Ok(Migration {
            collection: name.to_owned(),
            from,
            to,
            moved: 0,
            quarantined: 0,
        });
    }
    let fenced = current.version + 1;
    let mv = Move {
        retrieval,
        ctx,
        spec,
        gate: &gate,
        from,
        to,
        fenced,
    };
    retrieval
        .persist_route(mv.entry(fenced, from, Some(to)))
        .await?;
    let result = match retrieval.layout() {
        Layout::ShardKeys if to == IsolationTier::Silo => mv.promote_to_key().await,
        Layout::ShardKeys => mv.demote_from_key().await,
        _ => mv.between_collections().await,
    };
    let (moved, quarantined) = match result {
        Ok(counts) => counts,
        Err(e) => {
            if !matches!(e, Error::Migration { ref reason, .. } if reason == TAKEN_OVER) {
                mv.abort().await;
            }
            return Err(e);
        }
    };
    Ok(Migration {
        collection: name.to_owned(),
        from,
        to,
        moved,
        quarantined,
    })
}

const TAKEN_OVER: &str = "another process took over this migration";

/// One running migration.
struct Move<'a> {
    retrieval: &'a Retrieval,
    ctx: &'a TenantContext,
    spec: &'a CollectionSpec,
    gate: &'a Gate,
    from: IsolationTier,
    to: IsolationTier,
    /// The version of the migrating route.
    fenced: u64,
}

impl Move<'_> {
    fn entry(
        &self,
        version: u64,
        tier: IsolationTier,
        moving_to: Option<IsolationTier>,
    ) -> RouteEntry {
        RouteEntry {
            tenant: self.ctx.tenant(),
            collection: self.spec.name().to_owned(),
            tier,
            version,
            moving_to,
        }
    }

    fn fail(&self, reason: String) -> Error {
        Error::Migration {
            collection: self.spec.name().to_owned(),
            reason,
        }
    }

    fn exact(&self, tier: IsolationTier) -> Place {
        self.retrieval
            .exact_place(self.spec.name(), self.ctx.tenant(), tier)
    }

    fn scope(&self) -> ScopedFilter {
        ScopedFilter::tenant_only(self.ctx.tenant())
    }

    /// Persists the new route under the exclusive route gate, unless
    /// another process took the migration over; returns the gate, held.
    async fn switch(&self) -> Result<tokio::sync::OwnedRwLockWriteGuard<()>> {
        let route = self.gate.route.clone().write_owned().await;
        let now = self
            .retrieval
            .refresh(self.ctx.tenant(), Some(self.ctx), self.spec.name())
            .await?;
        if now.version != self.fenced {
            return Err(self.fail(TAKEN_OVER.into()));
        }
        self.retrieval
            .persist_route(self.entry(self.fenced + 1, self.to, None))
            .await?;
        Ok(route)
    }

    /// Collection per tier: copy, verify, switch, delete the source.
    async fn between_collections(&self) -> Result<(u64, u64)> {
        let (source, target) = (self.exact(self.from), self.exact(self.to));
        let store = &self.retrieval.inner.store;
        self.retrieval.ensure(&source, self.spec).await?;
        self.retrieval.ensure(&target, self.spec).await?;
        store.delete(&target, &self.scope()).await?;
        let counts = self.copy(&source, &target).await?;
        drop(self.switch().await?);
        let cleanup = if self.from == IsolationTier::Silo {
            self.retrieval.forget_collection(&source.collection);
            store.drop_collection(&source.collection).await
        } else {
            store.delete(&source, &self.scope()).await
        };
        self.after_switch(cleanup);
        Ok(counts)
    }

    /// Shard keys, Pool → Silo: the server replicates to a partial key.
    async fn promote_to_key(&self) -> Result<(u64, u64)> {
        let (source, target) = (
            self.exact(IsolationTier::Pool),
            self.exact(IsolationTier::Silo),
        );
        let (Shards::Key(from_key), Shards::Key(to_key)) = (&source.shards, &target.shards) else {
            return Err(self.fail("not a shard-key place".into()));
        };
        let store = &self.retrieval.inner.store;
        let collection = &target.collection;
        self.retrieval.ensure(&source, self.spec).await?;
        // A leftover key of an interrupted run (or an empty key the
        // resolver made) is replaced: the copy must come from the fallback.
        store.drop_shard_key(collection, to_key).await?;
        self.retrieval.forget_ensured(&target);
        store.create_shard_key(collection, to_key, true).await?;
        store
            .replicate(collection, from_key, to_key, &self.scope())
            .await?;
        // The key is active: the server routes the tenant to it. Check what
        // was copied as a read would, and remove what fails.
        let keys = self.retrieval.tenant_keys(self.ctx.tenant(), self.spec)?;
        let (mut copied, mut quarantined) = (0u64, 0u64);
        let mut offset = None;
        loop {
            let page = store
                .scroll(&target, &self.scope(), offset, PAGE, false)
                .await?;
            let mut bad = Vec::new();
            for p in &page.points {
                match guard::verify_point(self.ctx.tenant(), &keys, p) {
                    Ok(()) => copied += 1,
                    Err(reason) => {
                        quarantined += 1;
                        bad.push(p.id);
                        self.report(p.id, reason)?;
                    }
                }
            }
            if !bad.is_empty() {
                let ids = ScopedFilter::narrowed(self.ctx.tenant(), Node::HasId(bad));
                store.delete(&target, &ids).await?;
            }
            match page.next {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        self.verify_counts(&source, &target, copied, quarantined)
            .await?;
        drop(self.switch().await?);
        let cleanup = store.delete(&source, &self.scope()).await;
        self.after_switch(cleanup);
        Ok((copied, quarantined))
    }

    /// Shard keys, Silo → Pool: copy back into the fallback key, then
    /// delete the tenant's key (the server's switch).
    async fn demote_from_key(&self) -> Result<(u64, u64)> {
        let (source, target) = (
            self.exact(IsolationTier::Silo),
            self.exact(IsolationTier::Pool),
        );
        let Shards::Key(from_key) = &source.shards else {
            return Err(self.fail("not a shard-key place".into()));
        };
        let store = &self.retrieval.inner.store;
        self.retrieval.ensure(&target, self.spec).await?;
        self.retrieval.ensure(&source, self.spec).await?;
        store.delete(&target, &self.scope()).await?;
        let counts = self.copy(&source, &target).await?;
        // Route first, then the key, both under the exclusive route gate:
        // once the route says Pool nothing in this process recreates the
        // key, and until the key is gone the server keeps serving the
        // tenant's (complete) key.
        let route = self.switch().await?;
        let cleanup = store.drop_shard_key(&source.collection, from_key).await;
        self.retrieval.forget_ensured(&source);
        drop(route);
        self.after_switch(cleanup);
        Ok(counts)
    }

    /// Copies the tenant's points page by page, checking each; returns
    /// (copied, quarantined) after verifying the counts.
    async fn copy(&self, source: &Place, target: &Place) -> Result<(u64, u64)> {
        let store = &self.retrieval.inner.store;
        let keys = self.retrieval.tenant_keys(self.ctx.tenant(), self.spec)?;
        let (mut copied, mut quarantined) = (0u64, 0u64);
        let mut offset = None;
        loop {
            let page = store
                .scroll(source, &self.scope(), offset, PAGE, true)
                .await?;
            let mut good = Vec::with_capacity(page.points.len());
            for p in page.points {
                match guard::verify_point(self.ctx.tenant(), &keys, &p) {
                    Ok(()) => good.push(p),
                    Err(reason) => {
                        quarantined += 1;
                        self.report(p.id, reason)?;
                    }
                }
            }
            copied += good.len() as u64;
            store.upsert(target, good).await?;
            match page.next {
                Some(next) => offset = Some(next),
                None => break,
            }
        }
        self.verify_counts(source, target, copied, quarantined)
            .await?;
        Ok((copied, quarantined))
    }

    /// Removing the source copy after the switch is best effort: the
    /// leftover is invisible (no route leads to it) and the next migration
    /// the other way clears its target first.
    fn after_switch(&self, cleanup: Result<()>) {
        if let Err(e) = cleanup {
            self.ctx
                .audit_denied("retrieval.migrate.cleanup", self.spec.name(), &e);
        }
    }

    fn report(&self, point: uuid::Uuid, reason: crate::error::LeakReason) -> Result<()> {
        match quarantine::report(
            self.retrieval.inner.leak_policy,
            &self.retrieval.inner.leaks,
            self.ctx,
            "retrieval.migrate",
            self.spec.name(),
            point,
            reason,
        ) {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    async fn verify_counts(
        &self,
        source: &Place,
        target: &Place,
        copied: u64,
        quarantined: u64,
    ) -> Result<()> {
        let store = &self.retrieval.inner.store;
        let in_source = store.count(source, &self.scope()).await?;
        let in_target = store.count(target, &self.scope()).await?;
        if in_source != copied + quarantined || in_target != copied {
            return Err(self.fail(format!(
                "count mismatch: source {in_source}, target {in_target}, copied {copied}, \
                 quarantined {quarantined}"
            )));
        }
        Ok(())
    }

    /// Puts the route back on the source and removes the partial copy
    /// (best effort: if this fails too, the next promote/demote takes the
    /// interrupted migration over and clears its target first).
    async fn abort(&self) {
        let undo = async {
            let target = self.exact(self.to);
            let store = &self.retrieval.inner.store;
            match (&target.shards, self.to) {
                (Shards::Key(key), IsolationTier::Silo) => {
                    store.drop_shard_key(&target.collection, key).await?;
                    self.retrieval.forget_ensured(&target);
                }
                (_, IsolationTier::Silo) => {
                    self.retrieval.forget_collection(&target.collection);
                    store.drop_collection(&target.collection).await?;
                }
                (_, IsolationTier::Pool) => store.delete(&target, &self.scope()).await?,
            }
            self.retrieval
                .persist_route(self.entry(self.fenced + 1, self.from, None))
                .await
        };
        if let Err(undo) = undo.await {
            self.ctx
                .audit_denied("retrieval.migrate.abort", self.spec.name(), &undo);
        }
    }
}
