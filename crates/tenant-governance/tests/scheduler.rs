//! FairScheduler: weighted fair shares, lanes, bounds.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;
use tenant_core::{TenantContext, TenantId};
use tenant_governance::*;

/// Queues `heavy_n` requests for `heavy` and `light_n` for `light` behind a
/// closed gate (capacity 1, held), opens it and returns the tenants of the
/// first `window` admissions, in order.
async fn admissions(
    scheduler: &FairScheduler,
    heavy: &TenantContext,
    heavy_n: usize,
    light: &TenantContext,
    light_n: usize,
    window: usize,
) -> Vec<TenantId> {
    let gate = scheduler.admit(heavy, Lane::Interactive).await.unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    // The heavy tenant queues all of its work first: the worst case for the light one.
    for (ctx, n) in [(heavy, heavy_n), (light, light_n)] {
        for _ in 0..n {
            let (s, ctx, log) = (scheduler.clone(), ctx.clone(), log.clone());
            tasks.push(tokio::spawn(async move {
                let permit = s.admit(&ctx, Lane::Batch).await.unwrap();
                log.lock().unwrap().push(permit.context().tenant());
                tokio::task::yield_now().await;
            }));
            // Keep arrival order deterministic.
            tokio::task::yield_now().await;
        }
    }
    while scheduler.queued() < heavy_n + light_n {
        tokio::task::yield_now().await;
    }
    drop(gate);
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap();
    log[..window].to_vec()
}

fn share(log: &[TenantId], tenant: TenantId) -> f64 {
    log.iter().filter(|t| **t == tenant).count() as f64 / log.len() as f64
}

#[tokio::test(flavor = "current_thread")]
async fn a_tenant_submitting_100x_more_work_cannot_push_the_other_below_its_weight_share() {
    let issuer = issuer();
    for (heavy_w, light_w) in [(1u32, 1u32), (1, 3), (4, 1)] {
        let heavy = root(&issuer, TenantId::random(), None);
        let light = root(&issuer, TenantId::random(), None);
        let policy = Policy::default()
            .tenant(
                heavy.tenant(),
                TenantPolicy::new().weight(heavy_w).max_queued(10_000),
            )
            .tenant(light.tenant(), TenantPolicy::new().weight(light_w));
        let scheduler = FairScheduler::builder(&issuer.authority())
            .policy(policy)
            .capacity(1)
            .build();
        // 4_000 vs 40 requests; the window (the first 40 admissions) ends
        // before the light tenant could run out of work at its share.
        let window = 40;
        let log = admissions(&scheduler, &heavy, 4_000, &light, 40, window).await;
        let expected = f64::from(light_w) / f64::from(heavy_w + light_w);
        let got = share(&log, light.tenant());
        println!("weights {heavy_w}:{light_w}: light share {got:.3} (weight share {expected:.3})");
        assert!(
            got >= expected * 0.9,
            "weights {heavy_w}:{light_w}: light tenant got {got:.3} of admissions, weight share {expected:.3}"
        );
    }
}

#[tokio::test(flavor = "current_thread")]
async fn interactive_work_of_a_tenant_is_admitted_before_its_batch_work() {
    let issuer = issuer();
    let ctx = root(&issuer, TenantId::random(), None);
    let scheduler = FairScheduler::builder(&issuer.authority())
        .capacity(1)
        .build();
    let gate = scheduler.admit(&ctx, Lane::Interactive).await.unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for lane in [
        Lane::Batch,
        Lane::Batch,
        Lane::Interactive,
        Lane::Batch,
        Lane::Interactive,
    ] {
        let (s, ctx, log) = (scheduler.clone(), ctx.clone(), log.clone());
        tasks.push(tokio::spawn(async move {
            let _p = s.admit(&ctx, lane).await.unwrap();
            log.lock().unwrap().push(lane);
        }));
        tokio::task::yield_now().await;
    }
    while scheduler.queued() < 5 {
        tokio::task::yield_now().await;
    }
    drop(gate);
    for t in tasks {
        t.await.unwrap();
    }
    let log = log.lock().unwrap();
    assert_eq!(&log[..2], &[Lane::Interactive, Lane::Interactive]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_tenant_never_has_more_than_its_max_in_flight() {
    let issuer = issuer();
    let a = root(&issuer, TenantId::random(), None);
    let b = root(&issuer, TenantId::random(), None);
    let policy = Policy::new(TenantPolicy::new().max_in_flight(2));
    let scheduler = FairScheduler::builder(&issuer.authority())
        .policy(policy)
        .capacity(10)
        .build();
    let p1 = scheduler.admit(&a, Lane::Interactive).await.unwrap();
    let _p2 = scheduler.admit(&a, Lane::Interactive).await.unwrap();
    let third = tokio::time::timeout(
        Duration::from_millis(50),
        scheduler.admit(&a, Lane::Interactive),
    )
    .await;
    assert!(
        third.is_err(),
        "a third request of the same tenant must wait"
    );
    // Another tenant is not held back by it.
    let _pb = scheduler.admit(&b, Lane::Interactive).await.unwrap();
    assert_eq!(scheduler.queued(), 0, "the timed-out waiter left the queue");
    drop(p1);
    let _p3 = scheduler.admit(&a, Lane::Interactive).await.unwrap();
    assert_eq!(scheduler.in_flight(), 3);
}

#[tokio::test(flavor = "current_thread")]
async fn a_full_queue_refuses_with_queue_full() {
    let issuer = issuer();
    let a = root(&issuer, TenantId::random(), None);
    let policy = Policy::new(TenantPolicy::new().max_in_flight(1).max_queued(2));
    let scheduler = FairScheduler::builder(&issuer.authority())
        .policy(policy)
        .build();
    let _p = scheduler.admit(&a, Lane::Batch).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (s, a) = (scheduler.clone(), a.clone());
        waiting.push(tokio::spawn(async move {
            s.admit(&a, Lane::Batch).await.map(|_| ())
        }));
        tokio::task::yield_now().await;
    }
    let err = scheduler.admit(&a, Lane::Batch).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueFull {
                lane: Lane::Batch,
                max_queued: 2
            }
        ),
        "{err:?}"
    );
    for w in waiting {
        w.abort();
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_revoked_context_is_not_admitted_and_takes_no_slot() {
    let issuer = issuer();
    let parent = root(&issuer, TenantId::random(), None);
    let child = sub_agent(&parent, "w", 10);
    issuer.revocations().revoke(&parent);
    let scheduler = FairScheduler::builder(&issuer.authority())
        .capacity(1)
        .build();
    let err = scheduler
        .admit(&child, Lane::Interactive)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Context(tenant_core::Error::ContextRevoked)
    ));
    assert_eq!((scheduler.in_flight(), scheduler.queued()), (0, 0));
}

#[tokio::test(flavor = "current_thread")]
async fn a_context_of_another_issuer_is_not_admitted_and_takes_no_slot() {
    let issuer = issuer();
    let rogue = support::issuer();
    let real = root(&issuer, TenantId::random(), None);
    let forged = root(&rogue, real.tenant(), None);
    let scheduler = FairScheduler::builder(&issuer.authority())
        .capacity(1)
        .build();
    let err = scheduler
        .admit(&forged, Lane::Interactive)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        Error::Context(tenant_core::Error::ForeignAuthority)
    ));
    assert_eq!((scheduler.in_flight(), scheduler.queued()), (0, 0));
    // The real tenant's capacity is untouched.
    let _p = scheduler.admit(&real, Lane::Interactive).await.unwrap();
}
