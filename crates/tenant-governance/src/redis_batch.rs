//! The wire form of one [`RedisLedger`](crate::RedisLedger) batch: how the
//! operations waiting for the batch task become one call of
//! `redis_ledger.lua`, and how its reply becomes one answer per operation.
//!
//! Encoding does the grouping that keeps the script's work per operation
//! small:
//! * settlements and releases of one instance and one set of levels are
//!   summed into one *adjust* (they only add usage and subtract holds, so
//!   the sum is exact);
//! * reservations with the same levels and TTL form one *reserve group*
//!   whose levels are named once; each reservation is then an instance
//!   index and two numbers, checked by the script one by one, in order;
//! * each level key is rendered once per batch and sent with the longest
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

use tokio::sync::oneshot;

use crate::error::Result;
use crate::ledger::{duration_ms, Bound, Hold, LevelKey, LevelSpec, LevelUsage};
use crate::pricing::Amount;

/// One ledger operation waiting for the batch task.
pub(crate) enum Op {
    Reserve {
        hold: Hold,
        ttl: Duration,
    },
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
    /// Nothing but the batch itself: it extends the leases that are due.
    Refresh,
    /// Nothing: answered once every operation queued before it is applied.
    Flush,
}

impl Op {
    /// The ledger instance whose holds the operation changes.
    pub(crate) fn instance(&self) -> Option<u64> {
        match self {
            Op::Reserve { hold, .. } | Op::Settle { hold, .. } | Op::Release { hold } => {
                Some(instance_of(hold))
            }
            Op::Register { .. } | Op::Usage { .. } | Op::Refresh | Op::Flush => None,
        }
    }
}

/// The instance a hold belongs to (the high half of its id).
pub(crate) fn instance_of(hold: &Hold) -> u64 {
    hold.id.as_u64_pair().0
}

/// The script's answer for one operation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Answer {
    /// Granted (a reservation) or applied (anything else).
    Done,
    /// A reservation refused because its instance's lease is gone: nothing
    /// changed, and a new instance may retry.
    LeaseGone,
    /// A reservation refused by a limit.
    Refused {
        /// The refusing level, 1-based, in the request's order.
        level: usize,
        /// Time until it may pass, when it ever can.
        retry_after: Option<Duration>,
        /// 1 tokens, 2 cost, 3 requests.
        resource: u8,
    },
    /// A usage read.
    Usage(LevelUsage),
}

/// An operation and where its answer goes.
pub(crate) struct Job {
    pub(crate) op: Op,
    /// `None` when nobody waits: deferred settlements and releases, and
    /// lease refreshes.
    pub(crate) reply: Option<oneshot::Sender<Result<Answer>>>,
}

impl Job {
    /// A settlement or release nobody waits for: deferred (or dropped with
    /// its reservation). It is retried until applied.
    pub(crate) fn is_deferred(&self) -> bool {
        self.reply.is_none() && matches!(self.op, Op::Settle { .. } | Op::Release { .. })
    }
}

/// Who sends a batch's deferred settlements and releases, and the batch's
/// number among that writer's (see the script): it lets Redis apply each
/// exactly once however often it is re-sent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Marker {
    pub(crate) writer: u64,
    pub(crate) batch: u64,
}

/// One instance a batch names: (id, fresh, refresh); see the script.
pub(crate) type InstanceArg = (u64, bool, bool);

/// One batch, encoded for the script.
pub(crate) struct Encoded {
    /// The level keys, `KEYS[2..]` (the lease index is `KEYS[1]`).
    pub(crate) keys: Vec<String>,
    /// `ARGV[3]`: whether the batch reserves (then the script sweeps).
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
        let keep = level.retention_ms(self.now, ttl);
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

/// Amounts travel as doubles, as Lua holds every number.
fn num(v: u64) -> f64 {
    v as f64
}

/// One spec: `<HBddBdddd` (see the script).
fn push_spec(out: &mut Vec<u8>, key: u16, spec: &LevelSpec) {
    let (tk, tl, tp) = bound_args(&spec.tokens);
    let (ck, cl, cp) = bound_args(&spec.cost);
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
/// lifetime, 3 registered.
fn bound_args(b: &Bound) -> (u8, u64, u64) {
    match *b {
        Bound::Unlimited => (0, 0, 1),
        Bound::Periodic(p) => (1, p.limit, duration_ms(p.period).max(1)),
        Bound::Lifetime { limit, .. } => (2, limit, 1),
        Bound::Registered { .. } => (3, 0, 1),
        #[allow(unreachable_patterns)]
        _ => (0, 0, 1),
    }
}

/// Reservations sharing levels and TTL.
struct ReserveGroup<'a> {
    levels: &'a [LevelSpec],
    ttl: Duration,
    jobs: Vec<usize>,
}

/// Settlements and releases of one instance on one level set, summed.
struct Adjust<'a> {
    instance: u16,
    levels: &'a [LevelSpec],
    charge: (u64, u64),
    unhold: (u64, u64),
}

/// Encodes `jobs` for one script call. `instances` are the instances the
/// batch names; an operation whose instance is not among them is sent with
/// index 0, which the script treats as gone.
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
            .position(|(i, _, _)| *i == id)
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
            Op::Settle { hold, actual } => add_adjust(
                &mut adjusts,
                instance_index(instance_of(hold)),
                hold,
                *actual,
            ),
            Op::Release { hold } => add_adjust(
                &mut adjusts,
                instance_index(instance_of(hold)),
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
        put_f64(&mut ops, num(a.charge.0));
        put_f64(&mut ops, num(a.charge.1));
        put_f64(&mut ops, num(a.unhold.0));
        put_f64(&mut ops, num(a.unhold.1));
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
            let Op::Reserve { hold, .. } = &jobs[j].op else {
                unreachable!("reserve groups hold reservations only")
            };
            put_u16(&mut ops, instance_index(instance_of(hold)));
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
    let mut inst = Vec::with_capacity(18 * instances.len());
    for (id, fresh, refresh) in instances {
        inst.extend_from_slice(format!("{id:016x}").as_bytes());
        inst.push(if *fresh { b'1' } else { b'0' });
        inst.push(if *refresh { b'1' } else { b'0' });
    }
    let mut retention = Vec::with_capacity(8 * e.retention.len());
    for r in &e.retention {
        put_f64(&mut retention, num(*r));
    }
    Ok(Encoded {
        keys: e.keys,
        retention,
        sweep: !groups.is_empty(),
        instances: inst,
        specs: e.spec_bytes,
        ops,
        marker,
        reserves,
        usages,
    })
}

/// Adds a settlement charging `charge` (a release: nothing) of `hold` to
/// the adjustment of its instance and level list.
fn add_adjust<'a>(adjusts: &mut Vec<Adjust<'a>>, instance: u16, hold: &'a Hold, charge: Amount) {
    let levels = &hold.levels[..];
    let p = match adjusts
        .iter()
        .position(|a| a.instance == instance && same_levels(a.levels, levels))
    {
        Some(p) => p,
        None => {
            adjusts.push(Adjust {
                instance,
                levels,
                charge: (0, 0),
                unhold: (0, 0),
            });
            adjusts.len() - 1
        }
    };
    let a = &mut adjusts[p];
    a.charge.0 = a.charge.0.saturating_add(charge.tokens);
    a.charge.1 = a.charge.1.saturating_add(charge.cost_micros);
    a.unhold.0 = a.unhold.0.saturating_add(hold.amount.tokens);
    a.unhold.1 = a.unhold.1.saturating_add(hold.amount.cost_micros);
}

/// Level sets are usually shared (`Arc`) or short; compare by pointer
/// first.
fn same_levels(a: &[LevelSpec], b: &[LevelSpec]) -> bool {
    std::ptr::eq(a, b) || a == b
}

impl Encoded {
    /// One answer per job from the script's reply, and the instance
    /// liveness flags (`'1'`/`'0'`, one per named instance).
    pub(crate) fn decode(
        &self,
        jobs: usize,
        reply: Vec<String>,
    ) -> std::result::Result<(Vec<Answer>, String), String> {
        let bad = || "unexpected script reply".to_owned();
        if reply.len() != 3 + self.usages.len() {
            return Err(bad());
        }
        let mut reply = reply.into_iter();
        let status = reply.next().ok_or_else(bad)?;
        let refusals = reply.next().ok_or_else(bad)?;
        let live = reply.next().ok_or_else(bad)?;
        if status.len() != self.reserves.len() {
            return Err(bad());
        }
        let mut answers = vec![Answer::Done; jobs];
        let mut refusals = refusals.split(';');
        for (&j, verdict) in self.reserves.iter().zip(status.bytes()) {
            answers[j] = match verdict {
                b'1' => Answer::Done,
                b'L' => Answer::LeaseGone,
                b'0' => parse_refusal(refusals.next().ok_or_else(bad)?).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
        }
        for (&j, usage) in self.usages.iter().zip(reply) {
            answers[j] = Answer::Usage(parse_usage(&usage).ok_or_else(bad)?);
        }
        Ok((answers, live))
    }
}

/// `"<level> <retry ms, -1: never> <resource>"`.
fn parse_refusal(s: &str) -> Option<Answer> {
    let mut it = s.split(' ');
    let level = it.next()?.parse::<usize>().ok()?;
    let retry = it.next()?.parse::<f64>().ok()?;
    let resource = it.next()?.parse::<u8>().ok()?;
    let retry_after = (retry >= 0.0).then(|| Duration::from_millis(retry as u64));
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
