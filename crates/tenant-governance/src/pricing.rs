//! Model burndown multipliers and prices, estimates and actual usage.

use std::collections::HashMap;

/// How one model burns budget: each input and output token counts
/// `input_weight` / `output_weight` weighted tokens, and costs
/// `*_micros_per_1k` micro-units per thousand (unweighted) tokens.
///
/// ```
/// use tenant_governance::ModelRate;
/// let large = ModelRate::new().output_weight(5).price_per_1k(3_000, 15_000);
/// assert_eq!(large.weighted_tokens(1_000, 100), 1_500);
/// assert_eq!(large.cost_micros(1_000, 100), 4_500);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRate {
    input_weight: u32,
    output_weight: u32,
    input_micros_per_1k: u64,
    output_micros_per_1k: u64,
}

impl Default for ModelRate {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelRate {
    /// Weight 1 for input and output, no price.
    pub fn new() -> Self {
        Self {
            input_weight: 1,
            output_weight: 1,
            input_micros_per_1k: 0,
            output_micros_per_1k: 0,
        }
    }

    /// Burndown multiplier for input tokens.
    pub fn input_weight(mut self, weight: u32) -> Self {
        self.input_weight = weight;
        self
    }

    /// Burndown multiplier for output tokens (e.g. 5).
    pub fn output_weight(mut self, weight: u32) -> Self {
        self.output_weight = weight;
        self
    }

    /// Price per thousand input and output tokens, in micro-units.
    pub fn price_per_1k(mut self, input_micros: u64, output_micros: u64) -> Self {
        self.input_micros_per_1k = input_micros;
        self.output_micros_per_1k = output_micros;
        self
    }

    /// The input multiplier.
    pub fn input_multiplier(&self) -> u32 {
        self.input_weight
    }

    /// The output multiplier.
    pub fn output_multiplier(&self) -> u32 {
        self.output_weight
    }

    /// Weighted tokens for this usage (saturating).
    pub fn weighted_tokens(&self, input: u64, output: u64) -> u64 {
        input
            .saturating_mul(u64::from(self.input_weight))
            .saturating_add(output.saturating_mul(u64::from(self.output_weight)))
    }

    /// Cost in micro-units, rounded up (saturating).
    pub fn cost_micros(&self, input: u64, output: u64) -> u64 {
        let milli = u128::from(input) * u128::from(self.input_micros_per_1k)
            + u128::from(output) * u128::from(self.output_micros_per_1k);
        u64::try_from(milli.div_ceil(1000)).unwrap_or(u64::MAX)
    }

    /// The amount charged for this usage.
    pub fn amount(&self, input: u64, output: u64) -> Amount {
        Amount {
            tokens: self.weighted_tokens(input, output),
            cost_micros: self.cost_micros(input, output),
        }
    }
}

/// Rates per model name, with a default for models not listed.
#[derive(Clone, Debug, Default)]
pub struct ModelRates {
    default: ModelRate,
    models: HashMap<String, ModelRate>,
}

impl ModelRates {
    /// Every model at [`ModelRate::new`] unless listed.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rate of models not listed.
    pub fn default_rate(mut self, rate: ModelRate) -> Self {
        self.default = rate;
        self
    }

    /// Sets one model's rate.
    pub fn with(mut self, model: impl Into<String>, rate: ModelRate) -> Self {
        self.models.insert(model.into(), rate);
        self
    }

    /// The rate of `model`.
    pub fn rate(&self, model: &str) -> ModelRate {
        self.models.get(model).copied().unwrap_or(self.default)
    }
}

/// What a call is expected to use: reserve this before the call.
///
/// Pass `max_output_tokens` to the model as its output cap: the reservation
/// only guarantees no overspend if the call cannot produce more.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Estimate {
    model: String,
    input_tokens: u64,
    max_output_tokens: u64,
}

impl Estimate {
    /// An estimate for `model`.
    pub fn new(model: impl Into<String>, input_tokens: u64, max_output_tokens: u64) -> Self {
        Self {
            model: model.into(),
            input_tokens,
            max_output_tokens,
        }
    }

    /// The model.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// Input tokens.
    pub fn input_tokens(&self) -> u64 {
        self.input_tokens
    }

    /// The output cap.
    pub fn max_output_tokens(&self) -> u64 {
        self.max_output_tokens
    }
}

/// What a call actually used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
}

impl Usage {
    /// Usage of `input_tokens` in and `output_tokens` out.
    pub fn new(input_tokens: u64, output_tokens: u64) -> Self {
        Self {
            input_tokens,
            output_tokens,
        }
    }
}

/// An amount charged against quotas: weighted tokens and cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Amount {
    /// Weighted tokens.
    pub tokens: u64,
    /// Cost in micro-units.
    pub cost_micros: u64,
}

impl Amount {
    /// Whether `self` exceeds `other` in any resource.
    pub fn exceeds(&self, other: &Amount) -> bool {
        self.tokens > other.tokens || self.cost_micros > other.cost_micros
    }
}
