//! Shared set-up for the integration tests: real issuers and contexts.
#![allow(dead_code)]

use std::time::Duration;

use tenant_core::*;

pub fn issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::generate(KeyId::new("k1").unwrap()))
}

/// The same issuer in every process of a test (its contexts travel to
/// child processes as signed tokens).
pub fn fixed_issuer() -> ContextIssuer {
    ContextIssuer::new(MasterKey::from_bytes(KeyId::new("k1").unwrap(), [7u8; 32]))
}

/// This test binary, re-run as a child process for the ignored test
/// `name`, with `env` set and stdin and stdout piped.
pub fn spawn_child(name: &str, env: &[(&str, String)]) -> std::process::Child {
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        name,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Reads the child's output until a line containing `marker`.
pub fn wait_for(child: &mut std::process::Child, marker: &str) -> bool {
    use std::io::BufRead;
    let Some(stdout) = child.stdout.as_mut() else {
        return false;
    };
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.contains(marker) => return true,
            Ok(_) => {}
        }
    }
}

/// `kill -9`, then reap.
pub fn kill_9(child: &mut std::process::Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

pub fn root(issuer: &ContextIssuer, tenant: TenantId, budget: Option<u64>) -> TenantContext {
    let mut caps = Capabilities::unrestricted();
    caps = match budget {
        Some(b) => caps.with_token_budget(b),
        None => caps.with_unlimited_tokens(),
    };
    issuer
        .context()
        .tenant(tenant)
        .principal(PrincipalId::new("alice@example.com").unwrap())
        .agent(AgentId::new("orchestrator").unwrap())
        .capabilities(caps)
        .ttl(Duration::from_secs(600))
        .issue()
        .unwrap()
}

pub fn sub_agent(parent: &TenantContext, name: &str, budget: u64) -> TenantContext {
    parent
        .delegate(AgentId::new(name).unwrap())
        .token_budget(budget)
        .issue()
        .unwrap()
}

/// A tiny deterministic PRNG (xorshift) so races use varied amounts.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tenant_governance::{Error, Estimate, QuotaLevel, Quotas, TenantQuota, Usage};

pub const ROOT_BUDGET: u64 = 20_000;
pub const SUB_BUDGET: u64 = 8_000;
pub const SUB_AGENTS: usize = 4;

/// What one race settled.
#[derive(Debug, Default)]
pub struct RaceOutcome {
    pub settled: u64,
    pub per_sub_agent: Vec<u64>,
    pub refusals: u64,
}

/// `tasks` tasks spread over `SUB_AGENTS` sub-agents of `root` (plus the root
/// itself for every fifth task) race reservations until refused.
pub async fn race(quotas: &Quotas, root: &TenantContext, tasks: usize, seed: u64) -> RaceOutcome {
    let root_quota = TenantQuota::builder()
        .quotas(quotas)
        .tenant(root)
        .build()
        .unwrap();
    let mut handles = Vec::new();
    for i in 0..SUB_AGENTS {
        let child = sub_agent(root, &format!("worker-{i}"), SUB_BUDGET);
        handles.push(root_quota.delegate(&child).await.unwrap());
    }
    let per_sub: Arc<Vec<AtomicU64>> =
        Arc::new((0..SUB_AGENTS).map(|_| AtomicU64::new(0)).collect());
    let settled = Arc::new(AtomicU64::new(0));
    let refusals = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for t in 0..tasks {
        let (handle, slot) = if t % 5 == 4 {
            (root_quota.clone(), None)
        } else {
            (handles[t % SUB_AGENTS].clone(), Some(t % SUB_AGENTS))
        };
        let (per_sub, settled, refusals) = (per_sub.clone(), settled.clone(), refusals.clone());
        let mut rng = Rng((seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ ((t as u64 + 1) * 7919)) | 1);
        joins.push(tokio::spawn(async move {
            let mut refused_in_a_row = 0;
            while refused_in_a_row < 3 {
                let input = rng.between(50, 400);
                let max_out = rng.between(0, 200);
                match handle.reserve(&Estimate::new("m", input, max_out)).await {
                    Ok(r) => {
                        refused_in_a_row = 0;
                        tokio::task::yield_now().await;
                        let out = rng.between(0, max_out);
                        let s = r.settle(Usage::new(input, out)).await.unwrap();
                        assert!(!s.overrun);
                        settled.fetch_add(s.charged.tokens, Ordering::SeqCst);
                        if let Some(i) = slot {
                            per_sub[i].fetch_add(s.charged.tokens, Ordering::SeqCst);
                        }
                    }
                    Err(Error::QuotaExceeded { level, .. }) => {
                        assert!(
                            matches!(level, QuotaLevel::Context | QuotaLevel::Tenant),
                            "{level}"
                        );
                        refused_in_a_row += 1;
                        refusals.fetch_add(1, Ordering::SeqCst);
                        tokio::task::yield_now().await;
                    }
                    Err(e) => panic!("unexpected error: {e}"),
                }
            }
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    RaceOutcome {
        settled: settled.load(Ordering::SeqCst),
        per_sub_agent: per_sub.iter().map(|a| a.load(Ordering::SeqCst)).collect(),
        refusals: refusals.load(Ordering::SeqCst),
    }
}
