//! Ratios between two criterion benchmarks of the same run.
//!
//! The SDK's performance targets are ratios against a baseline measured in
//! the same run (never absolute timings from tests). After `criterion` has
//! measured both, [`report`] reads their median estimates from criterion's
//! output directory and prints `ratio subject/baseline`.
//! [`interleaved_p50s`] samples arms round by round instead, for ratios
//! that the machine's drift between criterion's back-to-back arms would
//! distort.

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where criterion writes its estimates: `$CRITERION_HOME`, else
/// `$CARGO_TARGET_DIR/criterion`, else `target/criterion` at the workspace
/// root (found from the bench's manifest dir).
pub fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(target).join("criterion");
    }
    let mut dir = std::env::current_dir().unwrap_or_default();
    loop {
        if dir.join("target").is_dir() && dir.join("Cargo.lock").is_file() {
            return dir.join("target").join("criterion");
        }
        if !dir.pop() {
            return PathBuf::from("target/criterion");
        }
    }
}

/// The median (ns per iteration) criterion estimated for `group/bench`, if
/// it has run.
pub fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(sanitize(group))
        .join(sanitize(bench))
        .join("new")
        .join("estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Criterion replaces these characters in directory names.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '/' | '\\' | '?' | '"' | '<' | '>' | '|' | '*' | ':' => '_',
            c => c,
        })
        .collect()
}

/// Prints and returns `subject / baseline` (medians), with the target.
///
/// `higher_is_better` is for throughput-style targets expressed as
/// `baseline_time / subject_time` (e.g. "≥ 0.9× raw throughput").
pub fn report(
    label: &str,
    subject: (&str, &str),
    baseline: (&str, &str),
    target: &str,
    higher_is_better: bool,
) -> Option<f64> {
    let s = median_ns(subject.0, subject.1)?;
    let b = median_ns(baseline.0, baseline.1)?;
    let ratio = if higher_is_better { b / s } else { s / b };
    println!(
        "RATIO {label}: {ratio:.3}x (subject {:.3} µs, baseline {:.3} µs; target {target})",
        s / 1000.0,
        b / 1000.0
    );
    Some(ratio)
}

/// The p50 time of each closure, sampled interleaved over `rounds` rounds
/// so that drift hits every arm alike. The order rotates every round (with
/// two arms, it alternates), so no arm always runs right after the same one
/// and inherits its cache footprint. Each closure gets the round number.
///
/// ```
/// use tenant_testkit::bench_ratio::interleaved_p50s;
/// let p50 = interleaved_p50s(10, &mut [&mut |_| {}, &mut |_| {
///     std::hint::black_box((0..100).sum::<u64>());
/// }]);
/// assert_eq!(p50.len(), 2);
/// ```
pub fn interleaved_p50s(rounds: usize, arms: &mut [&mut dyn FnMut(usize)]) -> Vec<Duration> {
    let n = arms.len();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::with_capacity(rounds); n];
    for r in 0..rounds {
        for j in 0..n {
            let k = (r + j) % n;
            let t = Instant::now();
            arms[k](r);
            samples[k].push(t.elapsed());
        }
    }
    samples
        .into_iter()
        .map(|mut v| {
            v.sort();
            v.get(v.len() / 2).copied().unwrap_or_default()
        })
        .collect()
}
