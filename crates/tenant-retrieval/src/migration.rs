//! Moving one tenant's collection between Pool and Silo, online.
//!
//! 1. Block the tenant's writes in this process (in-flight ones finish
//!    first) and persist the route as migrating (`moving_to`), which makes
//!    writes in every other process wait.
//! 2. Clear any leftover of an earlier interrupted run from the target.
//! 3. Copy page by page, checking every point exactly as a read would; a
//!    point that fails is quarantined (left behind, counted, alarmed), or
//!    aborts the move in strict mode.
//! 4. Verify: source count = copied + quarantined, target count = copied.
//! 5. Switch: persist the new route, publishing it under the exclusive
//!    route gate, which waits for this process's in-flight reads of the
//!    source. Other processes see the new version on their next check.
//! 6. Delete the source points (and drop a vacated Silo collection).
//!
//! Reads go to the source until step 5 and to the target after it. A
//! failure before step 5 persists the route back on the source.

use tenant_core::{IsolationTier, TenantContext};

use crate::collection::CollectionSpec;
use crate::error::{Error, Result};
use crate::filter::ScopedFilter;
use crate::guard;
use crate::quarantine;
use crate::retrieval::{Migration, Retrieval};
use crate::route::RouteEntry;

const PAGE: usize = 256;

pub(crate) async fn migrate(
    retrieval: &Retrieval,
    ctx: &TenantContext,
    spec: &CollectionSpec,
    to: IsolationTier,
) -> Result<Migration> {
    let tenant = ctx.tenant();
    let name = spec.name();
    let gate = retrieval.routes().gate(tenant, name);
    let _writes = gate.writes.clone().write_owned().await;

    let current = retrieval.refresh(tenant, Some(ctx), name).await?;
    let from = current.tier;
    if from == to && current.moving_to.is_none() {
        return Ok(Migration {
            collection: name.to_owned(),
            from,
            to,
            moved: 0,
            quarantined: 0,
        });
    }
    let entry = |version, tier, moving_to| RouteEntry {
        tenant,
        collection: name.to_owned(),
        tier,
        version,
        moving_to,
    };
    let fenced = current.version + 1;
    retrieval
        .persist_route(entry(fenced, from, Some(to)))
        .await?;

    match copy(retrieval, ctx, spec, from, to).await {
        Ok((moved, quarantined)) => {
            {
                let _route = gate.route.clone().write_owned().await;
                let now = retrieval.refresh(tenant, Some(ctx), name).await?;
                if now.version != fenced {
                    return Err(Error::Migration {
                        collection: name.to_owned(),
                        reason: "another process took over this migration".into(),
                    });
                }
                retrieval.persist_route(entry(fenced + 1, to, None)).await?;
            }
            let naming = retrieval.naming();
            let source = naming.physical(name, tenant, from);
            let store = &retrieval.inner.store;
            if from == IsolationTier::Silo {
                retrieval.forget_ensured(&source);
                store.drop_collection(&source).await?;
            } else {
                store
                    .delete(&source, &ScopedFilter::tenant_only(tenant))
                    .await?;
            }
            Ok(Migration {
                collection: name.to_owned(),
                from,
                to,
                moved,
                quarantined,
            })
        }
        Err(e) => {
            // Back on the source, and the partial copy removed (best
            // effort: if this fails too, the next promote/demote takes the
            // interrupted migration over and clears the target first).
            let undo = async {
                retrieval
                    .persist_route(entry(fenced + 1, from, None))
                    .await?;
                let target = retrieval.naming().physical(name, tenant, to);
                let store = &retrieval.inner.store;
                if to == IsolationTier::Silo {
                    retrieval.forget_ensured(&target);
                    store.drop_collection(&target).await
                } else {
                    store
                        .delete(&target, &ScopedFilter::tenant_only(tenant))
                        .await
                }
            };
            if let Err(undo) = undo.await {
                ctx.audit_denied("retrieval.migrate.abort", name, &undo);
            }
            Err(e)
        }
    }
}

/// Steps 2–4; returns (copied, quarantined).
async fn copy(
    retrieval: &Retrieval,
    ctx: &TenantContext,
    spec: &CollectionSpec,
    from: IsolationTier,
    to: IsolationTier,
) -> Result<(u64, u64)> {
    let tenant = ctx.tenant();
    let name = spec.name();
    let fail = |reason: String| Error::Migration {
        collection: name.to_owned(),
        reason,
    };
    let naming = retrieval.naming();
    let source = naming.physical(name, tenant, from);
    let target = naming.physical(name, tenant, to);
    let store = &retrieval.inner.store;
    retrieval.ensure(&source, spec).await?;
    retrieval.ensure(&target, spec).await?;

    let scope = ScopedFilter::tenant_only(tenant);
    store.delete(&target, &scope).await?;

    let keys = retrieval.tenant_keys(tenant, spec)?;
    let (mut copied, mut quarantined) = (0u64, 0u64);
    let mut offset = None;
    loop {
        let page = store.scroll(&source, &scope, offset, PAGE, true).await?;
        let mut good = Vec::with_capacity(page.points.len());
        for p in page.points {
            match guard::verify_point(tenant, &keys, &p) {
                Ok(()) => good.push(p),
                Err(reason) => {
                    quarantined += 1;
                    if let Some(err) = quarantine::report(
                        retrieval.inner.leak_policy,
                        &retrieval.inner.leaks,
                        ctx,
                        "retrieval.migrate",
                        name,
                        p.id,
                        reason,
                    ) {
                        return Err(err);
                    }
                }
            }
        }
        copied += good.len() as u64;
        store.upsert(&target, good).await?;
        match page.next {
            Some(next) => offset = Some(next),
            None => break,
        }
    }

    let in_source = store.count(&source, &scope).await?;
    let in_target = store.count(&target, &scope).await?;
    if in_source != copied + quarantined || in_target != copied {
        return Err(fail(format!(
            "count mismatch: source {in_source}, target {in_target}, copied {copied}, \
             quarantined {quarantined}"
        )));
    }
    Ok((copied, quarantined))
}
