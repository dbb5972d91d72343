//! Model burndown multipliers and prices, estimates and actual usage.

use std::collections::HashMap;

use crate::error::{Error, Result};

/// The largest amount (weighted tokens, cost, limit or counter) the ledgers
/// represent exactly: 2^53 − 1, the largest integer a double (Redis's Lua
/// numbers) holds without rounding. Estimates and usages beyond it are
/// refused with [`Error::AmountOutOfRange`]; limits beyond it are treated
/// as this limit; counters saturate at it.
pub const MAX_AMOUNT: u64 = (1 << 53) - 1;

/// `value` if it is at most [`MAX_AMOUNT`], else [`Error::AmountOutOfRange`].
pub(crate) fn bounded(what: &'static str, value: u64) -> Result<u64> {
    if value > MAX_AMOUNT {
        Err(Error::AmountOutOfRange {
            what,
            value,
            max: MAX_AMOUNT,
        })
    } else {
        Ok(value)
    }
}

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

/// Rates per model name, aliases of priced models, and an optional default
/// for models not listed.
///
/// A model without a rate is *unpriced*. Unpriced models burn tokens at
/// weight 1, but a call to one is refused with [`Error::ModelUnpriced`]
/// wherever a cost budget applies, so a new model name (or another name for
/// a priced one) cannot escape cost limits. Give every name callers may use
/// a rate or an alias, or configure a default rate explicitly.
///
/// ```
/// use tenant_governance::{ModelRate, ModelRates};
/// let rates = ModelRates::new()
///     .with("gpt-4o", ModelRate::new().price_per_1k(2_500, 10_000))
///     .alias("gpt-4o-2024-08-06", "gpt-4o");
/// assert_eq!(rates.lookup("gpt-4o-2024-08-06"), rates.lookup("gpt-4o"));
/// assert_eq!(rates.lookup("gpt-4o-mini"), None); // unpriced
/// ```
#[derive(Clone, Debug, Default)]
pub struct ModelRates {
    default: Option<ModelRate>,
    models: HashMap<String, ModelRate>,
    aliases: HashMap<String, String>,
}

impl ModelRates {
    /// No model priced, no default.
    pub fn new() -> Self {
        Self::default()
    }

    /// The rate of every model that is neither listed nor an alias. Without
    /// one, such models are unpriced (see the type docs).
    pub fn default_rate(mut self, rate: ModelRate) -> Self {
        self.default = Some(rate);
        self
    }

    /// Sets one model's rate.
    pub fn with(mut self, model: impl Into<String>, rate: ModelRate) -> Self {
        self.models.insert(model.into(), rate);
        self
    }

    /// Makes `alias` another name of `model`: it has `model`'s rate (or is
    /// unpriced if `model` is). One level: an alias of an alias resolves to
    /// nothing.
    pub fn alias(mut self, alias: impl Into<String>, model: impl Into<String>) -> Self {
        self.aliases.insert(alias.into(), model.into());
        self
    }

    /// The configured rate of `model`: its own, its alias target's, or the
    /// explicit default; `None` for an unpriced model.
    pub fn lookup(&self, model: &str) -> Option<ModelRate> {
        if let Some(rate) = self.models.get(model) {
            return Some(*rate);
        }
        match self.aliases.get(model) {
            Some(target) => self.models.get(target).copied().or(self.default),
            None => self.default,
        }
    }

    /// The rate `model` burns at: [`ModelRates::lookup`], or weight 1 and no
    /// price for an unpriced model.
    pub fn rate(&self, model: &str) -> ModelRate {
        self.lookup(model).unwrap_or_default()
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
    /// `self` if both parts are at most [`MAX_AMOUNT`].
    ///
    /// # Errors
    ///
    /// [`Error::AmountOutOfRange`] naming `what`.
    pub fn bounded(self, what: &'static str) -> Result<Amount> {
        bounded(what, self.tokens)?;
        bounded(what, self.cost_micros)?;
        Ok(self)
    }

    /// `self` with each part capped at [`MAX_AMOUNT`]: what a ledger
    /// charges for a usage beyond it.
    pub(crate) fn saturated(self) -> Amount {
        Amount {
            tokens: self.tokens.min(MAX_AMOUNT),
            cost_micros: self.cost_micros.min(MAX_AMOUNT),
        }
    }

    /// The sum, saturating at [`MAX_AMOUNT`].
    pub(crate) fn saturating_add(self, other: Amount) -> Amount {
        Amount {
            tokens: self.tokens.saturating_add(other.tokens).min(MAX_AMOUNT),
            cost_micros: self
                .cost_micros
                .saturating_add(other.cost_micros)
                .min(MAX_AMOUNT),
        }
    }

    /// Whether `self` exceeds `other` in any resource.
    pub fn exceeds(&self, other: &Amount) -> bool {
        self.tokens > other.tokens || self.cost_micros > other.cost_micros
    }
}
