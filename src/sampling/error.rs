//! What can go wrong when choosing a token: bad parameters or logits that name no token.

/// A sampling failure. Parameter errors say what range is allowed; logit errors name the token,
/// because a NaN or +inf logit means the forward pass is broken and must not be papered over.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    #[error("temperature must be a finite number >= 0 (0 = greedy), got {0}")]
    InvalidTemperature(f32),
    #[error("top_p must be in (0, 1] (1 = off), got {0}")]
    InvalidTopP(f32),
    #[error("min_p must be in [0, 1] (0 = off), got {0}")]
    InvalidMinP(f32),
    #[error("{name} must be in {range}, got {value}")]
    InvalidPenalty { name: &'static str, value: f32, range: &'static str },
    #[error("logit_bias names token {token}, outside the vocabulary of {vocab} tokens")]
    LogitBiasOutOfVocabulary { token: u32, vocab: usize },
    #[error("logit_bias lists token {token} twice or out of order")]
    UnsortedLogitBias { token: u32 },
    #[error("max_tokens must be at least 1")]
    ZeroMaxTokens,
    #[error("the logits are empty: no token to choose from")]
    EmptyLogits,
    #[error("the logit of token {token} is NaN: the forward pass produced invalid values")]
    NanLogit { token: u32 },
    #[error("the logit of token {token} is +infinity: the forward pass overflowed")]
    InfiniteLogit { token: u32 },
    #[error("every one of the {vocab} logits is -infinity: no token can be chosen")]
    AllMasked { vocab: usize },
    #[error("a token mask of {words} words does not cover {vocab} logits")]
    MaskSize { words: usize, vocab: usize },
    #[error("token {token} is outside the vocabulary of {vocab} logits")]
    TokenOutOfRange { token: u32, vocab: usize },
}
