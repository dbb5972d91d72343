//! Scrubbing known secrets from what leaves a run: tool output (JSON,
//! numbers included), error messages, sandbox output as it streams in, and
//! files read back from the workspace.
//!
//! A [`Redactor`] is shared by everything a run does (an executor and the
//! executors delegated from it), so a secret handed out in one call is
//! still scrubbed when a later call, of any tool, echoes it. For every
//! secret it finds:
//! - the raw value, also when any of its characters are written as
//!   percent-escapes (`%41`, any case) or JSON escapes (`\u0041`, `\"`,
//!   surrogate pairs) — the text is matched in decoded form and the whole
//!   encoded span is replaced;
//! - its hex encoding, in any letter case;
//! - its base64 encoding, standard and URL-safe alphabets, with or without
//!   padding, and at every byte alignment — so a secret inside a larger
//!   encoded blob, such as `Basic base64(user:secret)`, is found too.
//!
//! What no redactor can catch: any other transformation of the secret
//! (reversed, split, hashed, compressed, encrypted, spelled out) — see
//! `docs/tools.md`. The real defence is that a sandboxed process never
//! holds the secret at all (the egress proxy injects it).

use std::fmt;
use std::sync::{Arc, Mutex};

use base64::Engine;
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use zeroize::Zeroizing;

/// What a redacted secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Shortest secret whose encoded forms (hex, base64) are also searched;
/// shorter ones are matched raw only.
const MIN_ENCODED_LEN: usize = 6;

#[derive(Default)]
struct Needles {
    /// Raw secret bytes, matched against the decoded view.
    raw: Vec<Zeroizing<Vec<u8>>>,
    /// Lower-case hex forms, matched case-insensitively.
    hex: Vec<Zeroizing<Vec<u8>>>,
    /// Base64 runs fully determined by the secret, at each alignment.
    base64: Vec<Zeroizing<Vec<u8>>>,
    /// Longest span any form of any secret can take in text.
    longest: usize,
}

/// Remembers secrets and scrubs them from text, bytes and JSON. Cheap to
/// clone (clones share what they remember). `Debug` prints nothing of it.
#[derive(Clone, Default)]
pub struct Redactor {
    needles: Arc<Mutex<Needles>>,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Redactor { .. }")
    }
}

/// The base64 characters of `alphabet.encode(prefix ‖ secret)` that depend
/// on secret bits only, for each of the three byte alignments.
fn base64_cores(secret: &[u8]) -> Vec<Vec<u8>> {
    let n = secret.len();
    let mut out = Vec::new();
    for engine in [
        &base64::engine::general_purpose::STANDARD,
        &base64::engine::general_purpose::URL_SAFE,
    ] {
        for k in 0..3usize {
            let mut input = vec![0u8; k];
            input.extend_from_slice(secret);
            let enc = engine.encode(&input);
            let first = (8 * k).div_ceil(6);
            let last = 8 * (k + n) / 6;
            if let Some(core) = enc.as_bytes().get(first..last) {
                if core.len() >= 4 {
                    out.push(core.to_vec());
                }
            }
        }
    }
    out
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex4(text: &[u8], at: usize) -> Option<u32> {
    let digits = text.get(at..at + 4)?;
    digits
        .iter()
        .try_fold(0u32, |acc, &d| Some(acc * 16 + u32::from(hex_value(d)?)))
}

/// `text` with percent- and JSON escapes decoded; `spans[i]` is the range
/// of `text` that decoded byte `i` came from.
fn decoded_view(text: &[u8]) -> (Vec<u8>, Vec<(usize, usize)>) {
    let mut out = Vec::with_capacity(text.len());
    let mut spans = Vec::with_capacity(text.len());
    let mut i = 0;
    while let Some(&b) = text.get(i) {
        // %XX
        if b == b'%' {
            if let (Some(h), Some(l)) = (
                text.get(i + 1).copied().and_then(hex_value),
                text.get(i + 2).copied().and_then(hex_value),
            ) {
                out.push(h * 16 + l);
                spans.push((i, i + 3));
                i += 3;
                continue;
            }
        }
        if b == b'\\' {
            match text.get(i + 1) {
                Some(b'u') => {
                    if let Some(unit) = hex4(text, i + 2) {
                        let mut span = 6;
                        let mut ch = char::from_u32(unit);
                        if (0xD800..0xDC00).contains(&unit)
                            && text.get(i + 6) == Some(&b'\\')
                            && text.get(i + 7) == Some(&b'u')
                        {
                            if let Some(low) =
                                hex4(text, i + 8).filter(|l| (0xDC00..0xE000).contains(l))
                            {
                                ch = char::from_u32(
                                    0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00),
                                );
                                span = 12;
                            }
                        }
                        if let Some(ch) = ch {
                            let mut buf = [0u8; 4];
                            for &byte in ch.encode_utf8(&mut buf).as_bytes() {
                                out.push(byte);
                                spans.push((i, i + span));
                            }
                            i += span;
                            continue;
                        }
                    }
                }
                Some(&e @ (b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't')) => {
                    let byte = match e {
                        b'b' => 8,
                        b'f' => 12,
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        other => other,
                    };
                    out.push(byte);
                    spans.push((i, i + 2));
                    i += 2;
                    continue;
                }
                _ => {}
            }
        }
        out.push(b);
        spans.push((i, i + 1));
        i += 1;
    }
    (out, spans)
}

fn find_all(haystack: &[u8], needle: &[u8], mut hit: impl FnMut(usize)) {
    if needle.is_empty() {
        return;
    }
    for at in memchr::memmem::find_iter(haystack, needle) {
        hit(at);
    }
}

impl Redactor {
    /// A redactor that knows no secret yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Needles> {
        self.needles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a secret (and its encoded forms) to what is scrubbed.
    pub fn remember(&self, secret: &SecretString) {
        self.remember_bytes(secret.expose_secret().as_bytes());
    }

    pub(crate) fn remember_bytes(&self, raw: &[u8]) {
        if raw.is_empty() {
            return;
        }
        let mut n = self.lock();
        if n.raw.iter().any(|r| r.as_slice() == raw) {
            return;
        }
        n.raw.push(Zeroizing::new(raw.to_vec()));
        if raw.len() >= MIN_ENCODED_LEN {
            n.hex.push(Zeroizing::new(hex::encode(raw).into_bytes()));
            for core in base64_cores(raw) {
                n.base64.push(Zeroizing::new(core));
            }
        }
        // A character becomes at most a 6-byte JSON escape (a 4-byte
        // character becomes 12 bytes).
        n.longest = n.longest.max(raw.len() * 6);
    }

    /// Whether any secret has been remembered.
    pub fn is_empty(&self) -> bool {
        self.lock().raw.is_empty()
    }

    /// The spans of `text` holding a secret, sorted and merged.
    fn spans(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let n = self.lock();
        let mut spans = Vec::new();
        if n.raw.is_empty() {
            return spans;
        }
        let (decoded, map) = decoded_view(text);
        for needle in &n.raw {
            find_all(&decoded, needle, |at| {
                if let (Some(s), Some(e)) = (map.get(at), map.get(at + needle.len() - 1)) {
                    spans.push((s.0, e.1));
                }
            });
        }
        if !n.hex.is_empty() {
            let lower = text.to_ascii_lowercase();
            for needle in &n.hex {
                find_all(&lower, needle, |at| spans.push((at, at + needle.len())));
            }
        }
        for needle in &n.base64 {
            find_all(text, needle, |at| spans.push((at, at + needle.len())));
        }
        drop(n);
        spans.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
        for (s, e) in spans {
            match merged.last_mut() {
                Some(last) if s <= last.1 => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        merged
    }

    fn replace(text: &[u8], spans: &[(usize, usize)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len());
        let mut pos = 0;
        for &(s, e) in spans {
            out.extend_from_slice(text.get(pos..s).unwrap_or_default());
            out.extend_from_slice(REDACTED.as_bytes());
            pos = e;
        }
        out.extend_from_slice(text.get(pos..).unwrap_or_default());
        out
    }

    /// Whether `text` holds any remembered secret, in any form above.
    pub fn contains_secret(&self, text: &[u8]) -> bool {
        !self.spans(text).is_empty()
    }

    /// `bytes` with every remembered secret replaced by [`REDACTED`].
    pub fn redact_bytes(&self, bytes: &[u8]) -> Vec<u8> {
        let spans = self.spans(bytes);
        if spans.is_empty() {
            return bytes.to_vec();
        }
        Self::replace(bytes, &spans)
    }

    /// `text` with every remembered secret replaced by [`REDACTED`].
    pub fn redact_str(&self, text: &str) -> String {
        let spans = self.spans(text.as_bytes());
        if spans.is_empty() {
            return text.to_owned();
        }
        let out = Self::replace(text.as_bytes(), &spans);
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Redacts every string (keys included) and every number of a JSON
    /// value in place; a number holding a secret becomes the string
    /// [`REDACTED`].
    pub fn redact_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => *s = self.redact_str(s),
            Value::Number(num) => {
                if self.contains_secret(num.to_string().as_bytes()) {
                    *value = Value::String(REDACTED.to_owned());
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.redact_json(&mut v);
                    map.insert(self.redact_str(&k), v);
                }
            }
            Value::Null | Value::Bool(_) => {}
        }
    }

    /// A streaming redactor: bytes pushed in come out scrubbed, with just
    /// enough held back that a secret split across chunks is still found.
    pub fn stream(&self) -> RedactingStream {
        RedactingStream {
            redactor: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// Redacts a byte stream chunk by chunk (see [`Redactor::stream`]).
pub struct RedactingStream {
    redactor: Redactor,
    pending: Vec<u8>,
}

impl fmt::Debug for RedactingStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactingStream")
            .field("pending", &self.pending.len())
            .finish()
    }
}

impl RedactingStream {
    /// Takes `chunk`; returns the scrubbed bytes that can be released now.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<u8> {
        self.pending.extend_from_slice(chunk);
        let hold = self.redactor.lock().longest;
        if hold == 0 {
            return std::mem::take(&mut self.pending);
        }
        let spans = self.redactor.spans(&self.pending);
        // Any secret starting before `cut` ends before the buffer does, so
        // it has been seen whole.
        let mut cut = self.pending.len().saturating_sub(hold);
        if let Some(&(_, e)) = spans.iter().find(|(s, e)| *s < cut && *e > cut) {
            cut = e;
        }
        if cut == 0 {
            return Vec::new();
        }
        let done: Vec<(usize, usize)> = spans.into_iter().filter(|(_, e)| *e <= cut).collect();
        let head = self.pending.get(..cut).unwrap_or_default();
        let out = Redactor::replace(head, &done);
        self.pending.drain(..cut);
        out
    }

    /// Releases everything still held, scrubbed.
    pub fn finish(mut self) -> Vec<u8> {
        let rest = std::mem::take(&mut self.pending);
        self.redactor.redact_bytes(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: &str = "s3cr3t-T0ken/value+42";

    fn redactor() -> Redactor {
        let r = Redactor::new();
        r.remember(&SecretString::from(S.to_owned()));
        r
    }

    fn assert_scrubbed(r: &Redactor, text: &str) {
        let out = r.redact_str(text);
        assert!(out.contains(REDACTED), "not redacted: {text} -> {out}");
        assert!(!r.contains_secret(out.as_bytes()), "left over in {out}");
    }

    #[test]
    fn every_common_encoding_of_a_secret_is_scrubbed() {
        let r = redactor();
        let b = S.as_bytes();
        let std64 = base64::engine::general_purpose::STANDARD.encode(b);
        let url64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let hex_lower = hex::encode(b);
        let pct: String = b.iter().map(|c| format!("%{c:02X}")).collect();
        let pct_lower: String = b.iter().map(|c| format!("%{c:02x}")).collect();
        let json_u: String = S.chars().map(|c| format!("\\u{:04x}", c as u32)).collect();
        let json_mixed = S.replace('/', "\\/");
        for text in [
            format!("raw {S} end"),
            format!("std {std64} end"),
            format!("url {url64} end"),
            format!("hex {hex_lower} end"),
            format!("HEX {} end", hex_lower.to_uppercase()),
            format!(
                "MiXeD {}{}",
                &hex_lower[..6].to_uppercase(),
                &hex_lower[6..]
            ),
            format!("pct {pct}"),
            format!("pct {pct_lower}"),
            "form s3cr3t-T0ken%2Fvalue%2B42".to_owned(),
            format!(r#"{{"token": "{json_u}"}}"#),
            format!(r#"{{"token": "{json_mixed}"}}"#),
        ] {
            assert_scrubbed(&r, &text);
        }
    }

    #[test]
    fn a_secret_inside_basic_auth_is_scrubbed_for_any_user_name() {
        let r = redactor();
        for user in ["a", "al", "alice", "bob-the-builder"] {
            let header = format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{S}"))
            );
            let out = r.redact_str(&header);
            assert!(out.contains(REDACTED), "{header}");
            // What is left decodes to at most a few bits of the secret.
            let left = out.trim_start_matches("Authorization: Basic ");
            assert!(!left.contains(&S[1..S.len() - 1]));
        }
    }

    #[test]
    fn json_numbers_holding_a_secret_become_redacted_strings() {
        let r = Redactor::new();
        r.remember(&SecretString::from("12345678901".to_owned()));
        let mut v = serde_json::json!({"pin": 12345678901u64, "other": 7, "s": ["x12345678901y"]});
        r.redact_json(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"pin": REDACTED, "other": 7, "s": ["x[REDACTED]y"]})
        );
    }

    #[test]
    fn a_stream_scrubs_a_secret_split_across_chunks() {
        let r = redactor();
        let text = format!("start {S} middle {} end", hex::encode(S));
        for split in 1..text.len() {
            let mut s = r.stream();
            let mut out = Vec::new();
            for chunk in text.as_bytes().chunks(split) {
                out.extend(s.push(chunk));
            }
            out.extend(s.finish());
            let out = String::from_utf8(out).unwrap();
            assert_eq!(
                out, "start [REDACTED] middle [REDACTED] end",
                "chunks of {split}"
            );
        }
    }
}
