//! Moving one tenant's collection between Pool and Silo, online.
//!
//! 1. Block the tenant's writes (in-flight ones finish first).
//! 2. Clear any leftover of an earlier interrupted run from the target.
//! 3. Copy page by page, checking every point (tenant field, derived id,
//!    seal) exactly as a read would: a foreign point aborts the move.
//! 4. Verify: source count = target count = points copied.
//! 5. Switch routing: persist, then publish under the exclusive route lock,
//!    which waits for in-flight reads of the source.
//! 6. Delete the source points (and drop a vacated Silo collection).
//!
//! Reads go to the source until step 5 and to the target after it.

use tenant_core::{IsolationTier, TenantContext};

use crate::collection::CollectionSpec;
use crate::error::{Error, Result};
use crate::filter::ScopedFilter;
use crate::guard;
use crate::retrieval::{Migration, Retrieval};
use crate::seal::Sealer;

const PAGE: usize = 256;

pub(crate) async fn migrate(
    retrieval: &Retrieval,
    ctx: &TenantContext,
    spec: &CollectionSpec,
    to: IsolationTier,
) -> Result<Migration> {
    let tenant = ctx.tenant();
    let name = spec.name();
    let fail = |reason: String| Error::Migration {
        collection: name.to_owned(),
        reason,
    };
    let gate = retrieval.gate(tenant, name);
    let _writes = gate.writes.clone().write_owned().await;

    let from = retrieval.resolve(ctx, name);
    if from == to {
        return Ok(Migration {
            collection: name.to_owned(),
            from,
            to,
            moved: 0,
        });
    }
    let naming = retrieval.naming();
    let source = naming.physical(name, tenant, from);
    let target = naming.physical(name, tenant, to);
    let backend = &retrieval.inner.backend;
    retrieval.ensure(&source, spec).await?;
    retrieval.ensure(&target, spec).await?;

    let scope = ScopedFilter::tenant_only(tenant);
    backend.delete(&target, &scope).await?;

    let sealer = match (spec.is_sealed(), &retrieval.inner.keys) {
        (true, Some(keys)) => Some(Sealer::new(keys.as_ref(), tenant, name)?),
        (true, None) => return Err(Error::Sealing("no key provider".into())),
        (false, _) => None,
    };
    let mut copied = 0u64;
    let mut offset = None;
    loop {
        let page = backend.scroll(&source, &scope, offset, PAGE, true).await?;
        for p in &page.points {
            guard::check(tenant, sealer.as_ref(), p.id, None, p.payload.clone())
                .map_err(|reason| fail(format!("source point refused: {reason}")))?;
        }
        copied += page.points.len() as u64;
        backend.upsert(&target, page.points).await?;
        match page.next {
            Some(next) => offset = Some(next),
            None => break,
        }
    }

    let in_source = backend.count(&source, &scope).await?;
    let in_target = backend.count(&target, &scope).await?;
    if in_source != copied || in_target != copied {
        return Err(fail(format!(
            "count mismatch: source {in_source}, target {in_target}, copied {copied}"
        )));
    }

    {
        let _route = gate.route.clone().write_owned().await;
        retrieval.switch_route(tenant, name, to).await?;
    }

    if from == IsolationTier::Silo {
        retrieval.forget_ensured(&source);
        backend.drop_collection(&source).await?;
    } else {
        backend.delete(&source, &scope).await?;
    }
    Ok(Migration {
        collection: name.to_owned(),
        from,
        to,
        moved: copied,
    })
}
