//! The wire form of one [`RedisLedger`](crate::RedisLedger) script call: how
//! the operations of one key group in a batch become one call of
//! `redis_ledger.lua`, and how its reply becomes one answer per operation.
//!
//! Encoding does the grouping that keeps the script's work per operation
//! small:
//! * settlements and releases of one instance and one set of levels are
//!   summed into one *adjust* (they only add usage and subtract holds, so
//!   the sum is exact; a sum that would pass [`MAX_AMOUNT`] starts a new
//!   adjust, so every number sent stays exact);
//! * reservations with the same levels and TTL form one *reserve group*
//!   whose levels are named once; each reservation is then an instance
//!   index and two numbers, checked by the script one by one, in order;
//! * each level key is rendered once per call and sent with the longest
//!   retention any operation asks for, and each distinct (key, limits) spec
//!   is sent once;
//! * numbers travel packed (little-endian `u16` and `f64`) in one argument,
//!   so neither side parses or formats decimal text on the hot path.
//!
//! Every operation of a batch was waiting, unanswered, when the batch was
//! built, so they are all concurrent and the script may apply them in the
//! order adjusts, registrations, reservation groups, usage reads.

use std::collections::HashMap;
use std::time::Duration;

use tenant_core::TenantId;
use tokio::sync::oneshot;

use crate::error::Result;
use crate::ledger::{duration_ms, Bound, Hold, LevelKey, LevelSpec, LevelUsage};
use crate::pricing::{Amount, MAX_AMOUNT};
use crate::redis_admission::Permit;
use crate::redis_layout::Group;

/// One ledger operation waiting for the batch task.
pub(crate) enum Op {
    Reserve {
        hold: Hold,
        ttl: Duration,
    },
    /// Ends `hold` (its part in one group) and charges `actual`. A hold of
    /// instance 0 (no instance) is a charge without a hold.
    Settle {
        hold: Hold,
        actual: Amount,
    },
    Release {
        hold: Hold,
    },
    Register {
        level: LevelSpec,
        ttl: Duration,
    },
    Usage {
        level: LevelSpec,
        ttl: Duration,
    },
    /// Nothing but a batch: it extends the leases that are due.
    Refresh,
    /// Nothing: answered once every operation queued before it is applied.
    Flush,
}

impl Op {
    /// The ledger instance whose holds the operation changes.
    pub(crate) fn instance(&self) -> Option<u64> {
        match self {
            Op::Reserve { hold, .. } | Op::Settle { hold, .. } | Op::Release { hold } => {
                Some(hold.issuer())
            }
            Op::Register { .. } | Op::Usage { .. } | Op::Refresh | Op::Flush => None,
        }
    }

    /// The levels the operation touches.
    pub(crate) fn levels(&self) -> &[LevelSpec] {
        match self {
            Op::Reserve { hold, .. } | Op::Settle { hold, .. } | Op::Release { hold } => {
                &hold.levels
            }
            Op::Register { level, .. } | Op::Usage { level, .. } => std::slice::from_ref(level),
            Op::Refresh | Op::Flush => &[],
        }
    }

    /// The tenant whose queue the operation waits in (`None`: the
    /// platform's, for operations on the platform level only).
    pub(crate) fn tenant(&self) -> Option<TenantId> {
        self.levels().iter().find_map(|l| l.key.tenant())
    }
}

/// The script's answer for one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    /// Granted (a reservation) or applied (anything else).
    Done,
    /// A reservation refused because its instance is gone: nothing changed,
    /// and a new instance may retry.
    LeaseGone,
    /// A reservation refused by a level.
    Refused {
        /// The refusing level, 1-based, in the operation's order.
        level: usize,
        /// Time until it may pass, when it ever can.
        retry_after: Option<Duration>,
        /// 1 tokens, 2 cost, 3 requests, 4 unregistered ancestor, 5 beyond
        /// [`MAX_AMOUNT`].
        resource: u8,
    },
    /// The script found the operation invalid and skipped it.
    Invalid,
    /// A usage read.
    Usage(LevelUsage),
}

/// An operation and where its answer goes.
pub(crate) struct Job {
    pub(crate) op: Op,
    /// Who waits for the answer; `None` for deferred work and lease
    /// refreshes.
    pub(crate) reply: Option<oneshot::Sender<Result<Answer>>>,
    /// Must be applied: re-sent after a failure until Redis takes it
    /// (settlements, releases and charges, unless acknowledged).
    pub(crate) durable: bool,
    /// The key group it runs in.
    pub(crate) group: Group,
    /// Its place in the order the batch task received jobs.
    pub(crate) seq: u64,
    /// The tenant's admission slot, freed when the job is answered.
    pub(crate) permit: Option<Permit>,
}

impl Job {
    /// A job for `op` in `group`.
    pub(crate) fn new(op: Op, group: Group) -> Self {
        Self {
            op,
            reply: None,
            durable: false,
            group,
            seq: 0,
            permit: None,
        }
    }

    /// Whether nobody waits any more for a job that need not be applied
    /// (its caller gave up before it was sent).
    pub(crate) fn abandoned(&self) -> bool {
        !self.durable && self.reply.as_ref().is_some_and(oneshot::Sender::is_closed)
    }
}

/// Who sends a batch's settlements and releases, and the batch's number
/// among that writer's (see the script): it lets Redis apply each exactly
/// once however often it is re-sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    pub(crate) writer: u64,
    pub(crate) batch: u64,
}

/// One instance a call names: (id, extend its lease).
pub(crate) type InstanceArg = (u64, bool);

/// What the script says of an instance after a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InstanceState {
    /// Holds in the group; lease not extended by this call.
    Live,
    /// Holds in the group; lease extended (or registered) by this call.
    Extended,
    /// Swept: its holds here were charged; it never holds here again.
    Gone,
    /// Holds nothing in the group.
    Absent,
}

/// A call's failure.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// The outcome is unknown (Redis down, timeout, connection lost): the
    /// call may or may not have been applied. Redis's error, when there is
    /// one, is shared by every job of the call.
    Unknown(
        String,
        Option<std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>>,
    ),
    /// The script refused the whole call as malformed and changed nothing;
    /// sending it again would not help.
    Rejected(String),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Unknown(e, _) => f.write_str(e),
            CallError::Rejected(e) => write!(f, "the ledger script rejected the batch: {e}"),
        }
    }
}

/// A call's reply: one answer per job, the state of each named instance,
/// and how many operations the script skipped as invalid.
pub(crate) struct Reply {
    pub(crate) answers: Vec<Answer>,
    pub(crate) instances: Vec<InstanceState>,
    pub(crate) invalid: u64,
}

/// One call, encoded for the script.
pub(crate) struct Encoded {
    /// The level keys, `KEYS[2..]` (the lease index is `KEYS[1]`).
    pub(crate) keys: Vec<String>,
    /// `ARGV[3]`: whether the script sweeps expired instances (calls that
    /// read usage; the caller adds reserving calls now and then).
    pub(crate) sweep: bool,
    /// `ARGV[4]`.
    pub(crate) instances: Vec<u8>,
    /// `ARGV[5]`.
    pub(crate) specs: Vec<u8>,
    /// `ARGV[6]`.
    pub(crate) ops: Vec<u8>,
    /// `ARGV[7]` and `ARGV[8]`.
    pub(crate) marker: Option<Marker>,
    /// `ARGV[9]`: each level key's retention (ms), in `keys` order.
    pub(crate) retention: Vec<u8>,
    /// Job indices of the reservations, in the order the script answers.
    reserves: Vec<usize>,
    /// Job indices of the usage reads, in order.
    usages: Vec<usize>,
}

/// Operation kinds, as the script knows them.
const RESERVE_GROUP: u8 = 1;
const ADJUST: u8 = 2;
const REGISTER: u8 = 4;
const USAGE: u8 = 5;

/// Retention of level keys touched by settlements and releases (they hold
/// nothing new).
const ADJUST_TTL: Duration = Duration::from_millis(1);

/// Builds the script's arguments: level keys, specs and packed operations.
struct Encoder<'a> {
    prefix: &'a str,
    now: u64,
    keys: Vec<String>,
    /// Retention (ms) of each key, the longest any operation asks for;
    /// parallel to `keys`.
    retention: Vec<u64>,
    key_index: HashMap<&'a LevelKey, u16>,
    /// (KEYS index, spec), 1-based by position.
    specs: Vec<(u16, &'a LevelSpec)>,
    /// The first spec of each key.
    spec_index: HashMap<u16, u16>,
    spec_bytes: Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// The 1-based spec index of `level`, held for `ttl`.
    fn spec(&mut self, level: &'a LevelSpec, ttl: Duration) -> std::result::Result<u16, String> {
        let keep = level.retention_ms(self.now, ttl).min(MAX_AMOUNT);
        let key = match self.key_index.get(&level.key) {
            Some(&k) => k,
            None => {
                // KEYS[1] is the lease index.
                let k = u16::try_from(self.keys.len() + 2).map_err(|_| too_large())?;
                self.keys
                    .push(format!("{}:lv:{}", self.prefix, level.key.render()));
                self.retention.push(0);
                self.key_index.insert(&level.key, k);
                k
            }
        };
        let r = &mut self.retention[usize::from(key) - 2];
        *r = (*r).max(keep);
        if let Some(&i) = self.spec_index.get(&key) {
            if self.specs[usize::from(i) - 1].1 == level {
                return Ok(i);
            }
            // The same key with other limits (a policy change racing this
            // batch): find or add it below.
            if let Some(p) = self
                .specs
                .iter()
                .position(|(k, s)| *k == key && *s == level)
            {
                return u16::try_from(p + 1).map_err(|_| too_large());
            }
        }
        let i = u16::try_from(self.specs.len() + 1).map_err(|_| too_large())?;
        self.specs.push((key, level));
        self.spec_index.entry(key).or_insert(i);
        push_spec(&mut self.spec_bytes, key, level);
        Ok(i)
    }

    fn levels(
        &mut self,
        out: &mut Vec<u8>,
        levels: &'a [LevelSpec],
        ttl: Duration,
    ) -> std::result::Result<(), String> {
        put_u16(out, u16::try_from(levels.len()).map_err(|_| too_large())?);
        for l in levels {
            let i = self.spec(l, ttl)?;
            put_u16(out, i);
        }
        Ok(())
    }
}

fn too_large() -> String {
    "batch too large to encode".to_owned()
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_f64(out: &mut Vec<u8>, v: f64) {
    out.extend_from_slice(&v.to_le_bytes());
}

/// Amounts travel as doubles, as Lua holds every number; every one is at
/// most [`MAX_AMOUNT`], so exact.
fn num(v: u64) -> f64 {
    v.min(MAX_AMOUNT) as f64
}

/// One spec: `<HBddBdddd` (see the script).
fn push_spec(out: &mut Vec<u8>, key: u16, spec: &LevelSpec) {
    let (tk, tl, tp) = bound_args(&spec.tokens, true);
    let (ck, cl, cp) = bound_args(&spec.cost, false);
    let (rcap, rrate) = spec.requests.map_or((-1.0, 0.0), |r| {
        (f64::from(r.capacity), r.refill_per_second / 1000.0)
    });
    put_u16(out, key);
    out.push(tk);
    put_f64(out, num(tl));
    put_f64(out, num(tp));
    out.push(ck);
    put_f64(out, num(cl));
    put_f64(out, num(cp));
    put_f64(out, rcap);
    put_f64(out, rrate);
}

/// (kind, limit, period ms) of a bound: kind 0 none, 1 periodic, 2
/// lifetime, 3 registered, 4 lifetime unlimited (the last two for tokens
/// only: a context's pool).
fn bound_args(b: &Bound, tokens: bool) -> (u8, u64, u64) {
    match *b {
        Bound::Periodic(p) => (1, Bound::clamped(p.limit), duration_ms(p.period).max(1)),
        Bound::Lifetime { limit, .. } => (2, Bound::clamped(limit), 1),
        Bound::Registered { .. } if tokens => (3, 0, 1),
        Bound::LifetimeUnlimited { .. } if tokens => (4, 0, 1),
        _ => (0, 0, 1),
    }
}

/// Reservations sharing levels and TTL.
struct ReserveGroup<'a> {
    levels: &'a [LevelSpec],
    ttl: Duration,
    jobs: Vec<usize>,
}

/// Settlements and releases of one instance on one level set, summed:
/// usage to charge, holds to end, and what the usage exceeds the holds by
/// (all that is charged if the instance was swept).
struct Adjust<'a> {
    instance: u16,
    levels: &'a [LevelSpec],
    charge: Amount,
    unhold: Amount,
    over: Amount,
}

/// The non-negative difference, per resource.
fn excess(actual: Amount, held: Amount) -> Amount {
    Amount {
        tokens: actual.tokens.saturating_sub(held.tokens),
        cost_micros: actual.cost_micros.saturating_sub(held.cost_micros),
    }
}

/// Whether adding `b` to `a` stays within [`MAX_AMOUNT`].
fn fits(a: Amount, b: Amount) -> bool {
    a.tokens.saturating_add(b.tokens) <= MAX_AMOUNT
        && a.cost_micros.saturating_add(b.cost_micros) <= MAX_AMOUNT
}

/// Encodes `jobs` (all of one group) for one script call. `instances` are
/// the instances the call names; an operation whose instance is not among
/// them is sent with index 0 (no instance).
pub(crate) fn encode(
    jobs: &[Job],
    instances: &[InstanceArg],
    marker: Option<Marker>,
    prefix: &str,
    now: u64,
) -> std::result::Result<Encoded, String> {
    let mut e = Encoder {
        prefix,
        now,
        keys: Vec::new(),
        retention: Vec::new(),
        key_index: HashMap::new(),
        specs: Vec::new(),
        spec_index: HashMap::new(),
        spec_bytes: Vec::new(),
    };
    let instance_index = |id: u64| -> u16 {
        instances
            .iter()
            .position(|(i, _)| *i == id)
            .and_then(|p| u16::try_from(p + 1).ok())
            .unwrap_or(0)
    };
    let mut groups: Vec<ReserveGroup<'_>> = Vec::new();
    let mut adjusts: Vec<Adjust<'_>> = Vec::new();
    let mut registers: Vec<(&LevelSpec, Duration)> = Vec::new();
    let mut usage_reads: Vec<(&LevelSpec, Duration, usize)> = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        match &job.op {
            Op::Reserve { hold, ttl } => {
                let levels = &hold.levels[..];
                match groups
                    .iter_mut()
                    .find(|g| g.ttl == *ttl && same_levels(g.levels, levels))
                {
                    Some(g) => g.jobs.push(j),
                    None => groups.push(ReserveGroup {
                        levels,
                        ttl: *ttl,
                        jobs: vec![j],
                    }),
                }
            }
            Op::Settle { hold, actual } => {
                add_adjust(&mut adjusts, instance_index(hold.issuer()), hold, *actual)
            }
            Op::Release { hold } => add_adjust(
                &mut adjusts,
                instance_index(hold.issuer()),
                hold,
                Amount::default(),
            ),
            Op::Register { level, ttl } => registers.push((level, *ttl)),
            Op::Usage { level, ttl } => usage_reads.push((level, *ttl, j)),
            Op::Refresh | Op::Flush => {}
        }
    }
    let mut ops = Vec::with_capacity(64 + 20 * jobs.len());
    for a in &adjusts {
        ops.push(ADJUST);
        put_u16(&mut ops, a.instance);
        e.levels(&mut ops, a.levels, ADJUST_TTL)?;
        for v in [
            a.charge.tokens,
            a.charge.cost_micros,
            a.unhold.tokens,
            a.unhold.cost_micros,
            a.over.tokens,
            a.over.cost_micros,
        ] {
            put_f64(&mut ops, num(v));
        }
    }
    for (level, ttl) in registers {
        ops.push(REGISTER);
        let i = e.spec(level, ttl)?;
        put_u16(&mut ops, i);
    }
    let mut reserves = Vec::new();
    for g in &groups {
        ops.push(RESERVE_GROUP);
        e.levels(&mut ops, g.levels, g.ttl)?;
        put_u16(
            &mut ops,
            u16::try_from(g.jobs.len()).map_err(|_| too_large())?,
        );
        for &j in &g.jobs {
            let Some(Op::Reserve { hold, .. }) = jobs.get(j).map(|job| &job.op) else {
                return Err("a reserve group names a job that is not a reservation".into());
            };
            put_u16(&mut ops, instance_index(hold.issuer()));
            put_f64(&mut ops, num(hold.amount.tokens));
            put_f64(&mut ops, num(hold.amount.cost_micros));
            reserves.push(j);
        }
    }
    let mut usages = Vec::new();
    for (level, ttl, j) in usage_reads {
        ops.push(USAGE);
        let i = e.spec(level, ttl)?;
        put_u16(&mut ops, i);
        usages.push(j);
    }
    let mut inst = Vec::with_capacity(17 * instances.len());
    for (id, refresh) in instances {
        inst.extend_from_slice(format!("{id:016x}").as_bytes());
        inst.push(if *refresh { b'1' } else { b'0' });
    }
    let mut retention = Vec::with_capacity(8 * e.retention.len());
    for r in &e.retention {
        put_f64(&mut retention, num(*r));
    }
    Ok(Encoded {
        keys: e.keys,
        retention,
        sweep: !usages.is_empty(),
        instances: inst,
        specs: e.spec_bytes,
        ops,
        marker,
        reserves,
        usages,
    })
}

/// Adds a settlement charging `charge` (a release: nothing) of `hold` to
/// the adjustment of its instance and level list, starting a new one when
/// a sum would pass [`MAX_AMOUNT`].
fn add_adjust<'a>(adjusts: &mut Vec<Adjust<'a>>, instance: u16, hold: &'a Hold, charge: Amount) {
    let levels = &hold.levels[..];
    let over = excess(charge, hold.amount);
    let p = adjusts.iter().rposition(|a| {
        a.instance == instance
            && same_levels(a.levels, levels)
            && fits(a.charge, charge)
            && fits(a.unhold, hold.amount)
            && fits(a.over, over)
    });
    let p = match p {
        Some(p) => p,
        None => {
            adjusts.push(Adjust {
                instance,
                levels,
                charge: Amount::default(),
                unhold: Amount::default(),
                over: Amount::default(),
            });
            adjusts.len() - 1
        }
    };
    if let Some(a) = adjusts.get_mut(p) {
        a.charge = a.charge.saturating_add(charge);
        a.unhold = a.unhold.saturating_add(hold.amount);
        a.over = a.over.saturating_add(over);
    }
}

/// Level sets are usually shared (`Arc`) or short; compare by pointer
/// first.
fn same_levels(a: &[LevelSpec], b: &[LevelSpec]) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl Encoded {
    /// Whether the call reserves.
    pub(crate) fn reserves(&self) -> bool {
        !self.reserves.is_empty()
    }

    /// The script call: `KEYS` and `ARGV` as the script documents them.
    pub(crate) fn invocation<'a>(
        &self,
        script: &'a redis::Script,
        prefix: &str,
        lease_ms: u64,
    ) -> redis::ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(format!("{prefix}:leases"));
        for k in &self.keys {
            inv.key(k.as_str());
        }
        inv.arg(lease_ms)
            .arg(prefix)
            .arg(if self.sweep { "1" } else { "0" })
            .arg(&self.instances[..])
            .arg(&self.specs[..])
            .arg(&self.ops[..]);
        match self.marker {
            Some(m) => inv.arg(format!("{:016x}", m.writer)).arg(m.batch),
            None => inv.arg("").arg(0u8),
        };
        inv.arg(&self.retention[..]);
        inv
    }

    /// The reply of a call of `jobs` jobs naming `instances` instances.
    pub(crate) fn decode(
        &self,
        jobs: usize,
        instances: usize,
        reply: Vec<String>,
    ) -> std::result::Result<Reply, CallError> {
        let bad = || CallError::Unknown("unexpected script reply".to_owned(), None);
        if reply.first().map(String::as_str) == Some("malformed") {
            return Err(CallError::Rejected(
                reply.get(1).cloned().unwrap_or_default(),
            ));
        }
        if reply.len() != 4 + self.usages.len() {
            return Err(bad());
        }
        let mut reply = reply.into_iter();
        let status = reply.next().ok_or_else(bad)?;
        let refusals = reply.next().ok_or_else(bad)?;
        let states = reply.next().ok_or_else(bad)?;
        let invalid = reply
            .next()
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(bad)?;
        if status.len() != self.reserves.len() {
            return Err(bad());
        }
        let mut answers = vec![Answer::Done; jobs];
        let mut refusals = refusals.split(';');
        for (&j, verdict) in self.reserves.iter().zip(status.bytes()) {
            let answer = match verdict {
                b'1' => Answer::Done,
                b'L' => Answer::LeaseGone,
                b'X' => Answer::Invalid,
                b'0' => parse_refusal(refusals.next().ok_or_else(bad)?).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            *answers.get_mut(j).ok_or_else(bad)? = answer;
        }
        for (&j, usage) in self.usages.iter().zip(reply) {
            *answers.get_mut(j).ok_or_else(bad)? = if usage == "X" {
                Answer::Invalid
            } else {
                Answer::Usage(parse_usage(&usage).ok_or_else(bad)?)
            };
        }
        let instances_out: Vec<InstanceState> = if instances == 0 {
            Vec::new()
        } else {
            states
                .split(' ')
                .map(|s| match s {
                    "1" => Some(InstanceState::Live),
                    "E" => Some(InstanceState::Extended),
                    "0" => Some(InstanceState::Gone),
                    "-" => Some(InstanceState::Absent),
                    _ => None,
                })
                .collect::<Option<_>>()
                .ok_or_else(bad)?
        };
        if instances_out.len() != instances {
            return Err(bad());
        }
        Ok(Reply {
            answers,
            instances: instances_out,
            invalid,
        })
    }
}

/// `"<level> <retry ms, -1: never> <resource>"`.
fn parse_refusal(s: &str) -> Option<Answer> {
    let mut it = s.split(' ');
    let level = it.next()?.parse::<usize>().ok()?;
    let retry = it.next()?.parse::<f64>().ok()?;
    let resource = it.next()?.parse::<u8>().ok()?;
    let retry_after =
        (retry.is_finite() && retry >= 0.0).then(|| Duration::from_millis(retry as u64));
    Some(Answer::Refused {
        level,
        retry_after,
        resource,
    })
}

/// `"<tokens used> <held> <cost used> <held>"`.
fn parse_usage(s: &str) -> Option<LevelUsage> {
    let mut it = s
        .split(' ')
        .map(|v| v.parse::<f64>().ok().map(|f| f as u64));
    Some(LevelUsage {
        tokens_used: it.next()??,
        tokens_held: it.next()??,
        cost_used: it.next()??,
        cost_held: it.next()??,
    })
}

#[cfg(test)]
mod tests {
    //! The script on a real `redis-server`: a poisoned operation is skipped
    //! on its own, a malformed batch changes nothing.

    use std::sync::Arc;

    use redis::aio::MultiplexedConnection;
    use tenant_core::TenantId;

    use super::*;
    use crate::ledger::HoldRequest;
    use crate::policy::PeriodBudget;

    const INSTANCE: u64 = 0x1234_5678_9abc_def0;
    const PREFIX: &str = "poison";

    fn level(t: TenantId) -> Arc<[LevelSpec]> {
        vec![LevelSpec {
            key: LevelKey::Tenant(t),
            tokens: Bound::Periodic(PeriodBudget {
                limit: 1_000,
                period: Duration::from_secs(3600),
            }),
            cost: Bound::Unlimited,
            requests: None,
        }]
        .into()
    }

    fn hold(levels: &Arc<[LevelSpec]>, tokens: u64) -> Hold {
        Hold::issued(
            1,
            INSTANCE,
            &HoldRequest {
                levels: Arc::clone(levels),
                amount: Amount {
                    tokens,
                    cost_micros: 0,
                },
                ttl: Duration::from_secs(60),
            },
        )
    }

    fn settle(levels: &Arc<[LevelSpec]>, held: u64, actual: u64) -> Job {
        Job::new(
            Op::Settle {
                hold: hold(levels, held),
                actual: Amount {
                    tokens: actual,
                    cost_micros: 0,
                },
            },
            0,
        )
    }

    fn reserve(levels: &Arc<[LevelSpec]>, tokens: u64) -> Job {
        Job::new(
            Op::Reserve {
                hold: hold(levels, tokens),
                ttl: Duration::from_secs(60),
            },
            0,
        )
    }

    async fn call(
        conn: &mut MultiplexedConnection,
        jobs: &[Job],
        marker: Option<Marker>,
        poison: impl FnOnce(&mut Encoded),
    ) -> Vec<String> {
        let script = redis::Script::new(crate::redis_ledger::SCRIPT);
        let names = [(INSTANCE, false)];
        let mut enc = encode(jobs, &names, marker, PREFIX, crate::ledger::now_ms()).unwrap();
        poison(&mut enc);
        enc.invocation(&script, PREFIX, 30_000)
            .invoke_async(conn)
            .await
            .unwrap()
    }

    async fn usage(conn: &mut MultiplexedConnection, levels: &Arc<[LevelSpec]>) -> String {
        let job = Job::new(
            Op::Usage {
                level: levels[0].clone(),
                ttl: Duration::from_secs(60),
            },
            0,
        );
        let reply = call(conn, &[job], None, |_| {}).await;
        reply[4].clone()
    }

    fn replace(bytes: &mut [u8], from: f64, to: f64) {
        let from = from.to_le_bytes();
        let at = bytes
            .windows(8)
            .position(|w| w == from)
            .expect("the number is in the batch");
        bytes[at..at + 8].copy_from_slice(&to.to_le_bytes());
    }

    #[tokio::test]
    async fn a_poisoned_operation_is_skipped_alone_and_a_malformed_batch_changes_nothing() {
        let redis = tenant_testkit::TestRedis::start().unwrap();
        let mut conn = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let (a, b, c) = (
            level(TenantId::random()),
            level(TenantId::random()),
            level(TenantId::random()),
        );
        let reply = call(&mut conn, &[reserve(&a, 100)], None, |_| {}).await;
        assert_eq!(reply[0], "1");

        // One batch: A settles, B reserves with a poisoned amount (NaN), C
        // reserves. B is skipped; A and C apply, exactly once.
        let marker = Some(Marker {
            writer: 7,
            batch: 1,
        });
        let jobs = [settle(&a, 100, 60), reserve(&b, 50), reserve(&c, 70)];
        let reply = call(&mut conn, &jobs, marker, |e| {
            replace(&mut e.ops, 50.0, f64::NAN)
        })
        .await;
        assert_eq!((reply[0].as_str(), reply[3].as_str()), ("X1", "1"));
        assert_eq!(usage(&mut conn, &a).await, "60 0 0 0");
        assert_eq!(usage(&mut conn, &b).await, "0 0 0 0");
        assert_eq!(usage(&mut conn, &c).await, "0 70 0 0");

        // Poisoned limits (a negative limit, an infinite period) invalidate
        // only the operations that use them.
        let jobs = [reserve(&b, 10), reserve(&a, 1)];
        let reply = call(&mut conn, &jobs, None, |e| {
            replace(&mut e.specs, 3_600_000.0, f64::INFINITY)
        })
        .await;
        assert_eq!(reply[0], "X1", "only the first spec's period was poisoned");
        assert_eq!(usage(&mut conn, &b).await, "0 0 0 0");

        // A batch that cannot be decoded changes nothing at all, not even
        // the writer's applied marker.
        let marker = Some(Marker {
            writer: 7,
            batch: 2,
        });
        let reply = call(&mut conn, &[settle(&c, 70, 70)], marker, |e| {
            e.ops.truncate(e.ops.len() - 3)
        })
        .await;
        assert_eq!(reply[0], "malformed");
        assert_eq!(usage(&mut conn, &c).await, "0 70 0 0");
        let applied: Option<String> = redis::cmd("GET")
            .arg(format!("{PREFIX}:applied:{:016x}", 7))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(applied.as_deref(), Some("1"));
    }
}
