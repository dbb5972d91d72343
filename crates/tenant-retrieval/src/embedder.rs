//! Turning text into vectors.

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use crate::error::Result;

/// Produces embeddings. Plug a model client in here; vectors can also be
/// passed to the client directly.
#[async_trait]
pub trait Embedder: Send + Sync {
    /// Dimensions of every vector produced.
    fn dims(&self) -> usize;

    /// One vector per text, in order.
    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>>;
}

/// A deterministic embedder for tests and examples (no model, no
/// downloads): feature hashing of lower-cased words and word bigrams into
/// `dims` buckets with SHA-256 signs, L2-normalised. Texts sharing words
/// are close under cosine similarity; identical texts are identical.
#[derive(Clone, Copy, Debug)]
pub struct HashEmbedder {
    dims: usize,
}

impl HashEmbedder {
    /// An embedder of `dims` dimensions (at least 1).
    pub fn new(dims: usize) -> Self {
        Self { dims: dims.max(1) }
    }

    /// Embeds one text synchronously.
    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut v = vec![0f32; self.dims];
        let lower = text.to_lowercase();
        let words: Vec<&str> = lower
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .collect();
        let mut add = |feature: &[u8], weight: f32| {
            let h = Sha256::digest(feature);
            let idx = u64::from_le_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]]);
            let sign = if h[8] & 1 == 0 { 1.0 } else { -1.0 };
            v[(idx % self.dims as u64) as usize] += sign * weight;
        };
        for w in &words {
            add(w.as_bytes(), 1.0);
        }
        for pair in words.windows(2) {
            add(format!("{} {}", pair[0], pair[1]).as_bytes(), 0.5);
        }
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        } else {
            v[0] = 1.0;
        }
        v
    }
}

#[async_trait]
impl Embedder for HashEmbedder {
    fn dims(&self) -> usize {
        self.dims
    }

    async fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        Ok(texts.iter().map(|t| self.embed_one(t)).collect())
    }
}
