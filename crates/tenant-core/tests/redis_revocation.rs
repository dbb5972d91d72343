//! Revocations shared through a real Redis: a revocation recorded by one
//! OS process is enforced by another within the staleness bound; a replica
//! cut off from Redis fails closed; entries expire with what they cover.
#![cfg(feature = "redis")]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;
use support::*;
use tenant_core::*;
use tenant_testkit::TestRedis;

const BOUND: Duration = Duration::from_millis(500);
const NS: &str = "test";
/// Generous: the machine is shared, and a test must not fail on load.
const DEADLINE: Duration = Duration::from_secs(30);

fn platform_key() -> MasterKey {
    MasterKey::from_bytes(KeyId::new("platform").unwrap(), [5; 32])
}

async fn replica(url: &str) -> (ContextIssuer, RedisRevocationStore, RevocationFollower) {
    let revocations = Revocations::replica(BOUND).unwrap();
    let store = RedisRevocationStore::connect(url, NS, &revocations)
        .await
        .unwrap();
    let follower = store.follow().await.unwrap();
    let issuer = ContextIssuer::builder(platform_key())
        .revocations(revocations)
        .build()
        .unwrap();
    (issuer, store, follower)
}

fn jwt(tenant: TenantId, sub: &str, jti: &str, sid: &str) -> String {
    let mut c = jwt_claims(tenant);
    c["sub"] = json!(sub);
    c["jti"] = json!(jti);
    c["sid"] = json!(sid);
    hs_token(&c)
}

fn until() -> SystemTime {
    SystemTime::now() + Duration::from_secs(3600)
}

/// Waits until `probe` holds (the check runs in this process, against its
/// own registry), or fails after [`DEADLINE`].
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let start = Instant::now();
    while !probe() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The other process: its own issuer (another master key), its own
/// registry following the same Redis, the platform's token public key.
/// Steps are driven over stdin/stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of the cross-process revocation test"]
async fn revocation_worker_process() {
    let Ok(url) = std::env::var("TC_REDIS_URL") else {
        return;
    };
    let token = std::env::var("TC_CONTEXT_TOKEN").unwrap();
    let public = std::env::var("TC_TOKEN_KEY").unwrap();
    let jwts: Vec<String> = std::env::var("TC_JWTS")
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let revocations = Revocations::replica(BOUND).unwrap();
    let store = RedisRevocationStore::connect(&url, NS, &revocations)
        .await
        .unwrap();
    let _follower = store.follow().await.unwrap();
    let local = ContextIssuer::builder(MasterKey::from_bytes(
        KeyId::new("worker").unwrap(),
        [6; 32],
    ))
    .revocations(revocations)
    .build()
    .unwrap();
    let verifier = TokenVerifier::new()
        .with_key_hex(KeyId::new("platform").unwrap(), &public)
        .unwrap();
    let jwt_verifier = hs_verifier();

    let remote = local.accept_remote(&token, &verifier).unwrap();
    let remote_child = remote.delegate(agent("sub")).issue().unwrap();
    let from_jwt: Vec<TenantContext> = jwts
        .iter()
        .map(|j| jwt_verifier.verify(j, &local).unwrap())
        .collect();

    let step = |name: &str, ok_now: &dyn Fn() -> bool, enforced: &dyn Fn() -> bool| {
        // Valid before the revocation (so the revocation is what changes it) ...
        assert!(ok_now(), "{name}: not valid before the revocation");
        println!("READY {name}");
        std::io::stdout().flush().unwrap();
        // ... then refused once the other process has revoked.
        eventually(name, enforced);
        println!("ENFORCED {name}");
        std::io::stdout().flush().unwrap();
    };
    let revoked = |ctx: &TenantContext| matches!(ctx.check(), Err(Error::ContextRevoked));
    let refused = |jwt: &str| {
        matches!(
            jwt_verifier.verify(jwt, &local),
            Err(Error::ClaimRejected(ClaimRejection::Revoked))
        )
    };

    step(
        "context",
        &|| remote.check().is_ok() && remote_child.check().is_ok(),
        &|| revoked(&remote) && revoked(&remote_child),
    );
    step(
        "jti",
        &|| from_jwt[0].check().is_ok() && jwt_verifier.verify(&jwts[0], &local).is_ok(),
        &|| revoked(&from_jwt[0]) && refused(&jwts[0]),
    );
    step(
        "session",
        &|| from_jwt[1].check().is_ok() && jwt_verifier.verify(&jwts[2], &local).is_ok(),
        &|| revoked(&from_jwt[1]) && refused(&jwts[1]) && refused(&jwts[2]),
    );
    step("subject", &|| from_jwt[3].check().is_ok(), &|| {
        revoked(&from_jwt[3]) && refused(&jwts[3])
    });
    // Untouched by all of it: another principal's token.
    from_jwt[4].check().unwrap();
    jwt_verifier.verify(&jwts[4], &local).unwrap();
    println!("DONE");
}

struct Worker {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Worker {
    fn spawn(env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(std::env::current_exe().unwrap());
        cmd.args([
            "revocation_worker_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .stdout(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self { child, lines }
    }

    fn expect(&mut self, want: &str) {
        let start = Instant::now();
        let mut seen = Vec::new();
        loop {
            let left = DEADLINE.saturating_sub(start.elapsed());
            match self.lines.recv_timeout(left) {
                // The harness prints "test name ... " before the first line.
                Ok(line) if line.trim().ends_with(want) => return,
                Ok(line) => seen.push(line),
                Err(_) => {
                    let _ = self.child.kill();
                    panic!("worker never said {want:?}; it said {seen:#?}");
                }
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_made_in_one_process_is_enforced_in_another() {
    let redis = TestRedis::start().unwrap();
    let (platform, store, _follower) = replica(&redis.url()).await;
    let verifier = hs_verifier();
    let tenant = TenantId::random();
    let direct = root(&platform);
    let jwts = [
        jwt(tenant, "alice", "jti-1", "s-1"),
        jwt(tenant, "alice", "jti-2", "s-2"),
        jwt(tenant, "alice", "jti-3", "s-2"),
        jwt(tenant, "carol", "jti-4", "s-4"),
        jwt(tenant, "bob", "jti-5", "s-5"),
    ];
    let (_, public) = platform.token_verifier().public_keys().next().unwrap();
    let mut worker = Worker::spawn(&[
        ("TC_REDIS_URL", redis.url()),
        ("TC_CONTEXT_TOKEN", direct.to_token().as_str().to_owned()),
        ("TC_TOKEN_KEY", hex::encode(public)),
        ("TC_JWTS", jwts.join(",")),
    ]);

    worker.expect("READY context");
    store.revoke(&Revocation::context(&direct)).await.unwrap();
    worker.expect("ENFORCED context");
    assert!(matches!(direct.check(), Err(Error::ContextRevoked)));

    worker.expect("READY jti");
    store
        .revoke(&Revocation::jwt_id(verifier.issuer(), "jti-1", until()))
        .await
        .unwrap();
    worker.expect("ENFORCED jti");

    worker.expect("READY session");
    store
        .revoke(&Revocation::jwt_session(verifier.issuer(), "s-2", until()))
        .await
        .unwrap();
    worker.expect("ENFORCED session");

    worker.expect("READY subject");
    store
        .revoke(&Revocation::principal(
            tenant,
            &PrincipalId::new("carol").unwrap(),
            SystemTime::now() + Duration::from_secs(1),
            until(),
        ))
        .await
        .unwrap();
    worker.expect("ENFORCED subject");
    worker.expect("DONE");

    // The revoking process enforces all of it itself, and bob is untouched.
    for (i, j) in jwts.iter().enumerate().take(4) {
        assert_eq!(
            rejection(verifier.verify(j, &platform)),
            ClaimRejection::Revoked,
            "jwt {i}"
        );
    }
    verifier.verify(&jwts[4], &platform).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_replica_refuses_earlier_revocations_as_soon_as_it_follows() {
    let redis = TestRedis::start().unwrap();
    let (first, store, _f1) = replica(&redis.url()).await;
    let ctx = root(&first);
    let token = ctx.to_token();
    store.revoke(&Revocation::context(&ctx)).await.unwrap();

    let (second, _store2, follower) = replica(&redis.url()).await;
    assert!(follower.applied() >= 1);
    // No waiting: `follow` returned after the first load.
    assert!(matches!(
        second.accept_token(token.as_str()),
        Err(Error::ContextRevoked)
    ));
    assert_eq!(second.revocations().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_redis_fails_closed_and_recovers() {
    let mut redis = TestRedis::start().unwrap();
    let (issuer, store, follower) = replica(&redis.url()).await;
    let ctx = root(&issuer);
    let jwt = jwt(ctx.tenant(), "alice", "j", "s");
    ctx.check().unwrap();

    redis.stop().unwrap();
    // Past the bound, every entry point refuses: the view may be missing
    // revocations made meanwhile.
    eventually("stale", || {
        matches!(ctx.check(), Err(Error::RevocationsStale))
    });
    assert!(matches!(
        issuer.authority().admit(&ctx),
        Err(Error::RevocationsStale)
    ));
    assert!(matches!(
        ctx.delegate(agent("c")).issue(),
        Err(Error::RevocationsStale)
    ));
    assert!(matches!(
        hs_verifier().verify(&jwt, &issuer),
        Err(Error::RevocationsStale)
    ));
    assert!(matches!(
        issuer
            .context()
            .tenant(ctx.tenant())
            .principal(principal())
            .issue(),
        Err(Error::RevocationsStale)
    ));
    assert!(matches!(
        issuer.accept_token(ctx.to_token().as_str()),
        Err(Error::RevocationsStale)
    ));
    // Revoking while Redis is down: an error, but this process enforces it.
    let lost = Revocation::jwt_id(JWT_ISS, "offline", until());
    assert!(matches!(
        store.revoke(&lost).await,
        Err(Error::RevocationStore { .. })
    ));
    assert!(issuer.revocations().entries().contains(&lost));

    redis.restart().unwrap();
    eventually("recovered", || ctx.check().is_ok());
    assert!(follower.errors() >= 1);
    assert!(follower.reloads() >= 2);
    issuer.accept_token(ctx.to_token().as_str()).unwrap();
    hs_verifier().verify(&jwt, &issuer).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_expire_in_redis_with_what_they_cover() {
    let redis = TestRedis::start().unwrap();
    let (issuer, store, _f) = replica(&redis.url()).await;
    let short = issuer
        .context()
        .tenant(TenantId::random())
        .principal(principal())
        .ttl(Duration::from_millis(1500))
        .issue()
        .unwrap();
    store.revoke(&Revocation::context(&short)).await.unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{{{NS}}}:rev:e:{}", Revocation::context(&short).key());
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(expire_at as u64, short.expires_at_unix_ms());
    assert_eq!(store.load_all().await.unwrap().len(), 1);
    // Once the context has expired, Redis has dropped the entry.
    eventually("expired", || key_exists(&redis.url(), &key) == 0);
    assert!(store.load_all().await.unwrap().is_empty());
    // Revoking something already expired stores nothing.
    let gone = Revocation::context_id(short.id(), SystemTime::now() - Duration::from_secs(1));
    store.revoke(&gone).await.unwrap();
    assert!(store.load_all().await.unwrap().is_empty());
}

/// `EXISTS key` on a fresh blocking connection.
fn key_exists(url: &str, key: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_connection().unwrap();
    redis::cmd("EXISTS").arg(key).query(&mut conn).unwrap()
}

#[tokio::test]
async fn a_store_needs_a_replica_registry_and_a_sane_namespace() {
    let redis = TestRedis::shared();
    let authoritative = Revocations::new();
    let store = RedisRevocationStore::connect(&redis.url(), NS, &authoritative)
        .await
        .unwrap();
    assert!(matches!(
        store.follow().await,
        Err(Error::InvalidConfiguration(_))
    ));
    for ns in ["", "a}b", "a{b", "has space", &"n".repeat(65)] {
        assert!(matches!(
            RedisRevocationStore::connect(&redis.url(), ns, &authoritative).await,
            Err(Error::InvalidConfiguration(_))
        ));
    }
    assert!(matches!(
        Revocations::replica(Duration::ZERO),
        Err(Error::InvalidConfiguration(_))
    ));
}

#[tokio::test]
async fn garbage_in_redis_fails_closed() {
    let redis = TestRedis::start().unwrap();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("{{{NS}}}:rev:e:ctx:bogus"))
        .arg("not an entry")
        .query_async(&mut conn)
        .await
        .unwrap();
    let revocations = Revocations::replica(BOUND).unwrap();
    let store = RedisRevocationStore::connect(&redis.url(), NS, &revocations)
        .await
        .unwrap();
    assert!(matches!(
        store.follow().await,
        Err(Error::MalformedRevocation(_))
    ));
    let issuer = ContextIssuer::builder(platform_key())
        .revocations(revocations)
        .build()
        .unwrap();
    assert!(matches!(try_root(&issuer), Err(Error::RevocationsStale)));
}
