//! Perplexity of a text, as llama.cpp's `llama-perplexity` measures it: the tokens are cut into
//! windows of `context` tokens (BOS first when the model's prompts start with one, then the
//! text's next tokens; windows do not overlap), and in each window only the predictions of its
//! second half are scored, so every
//! scored token sees at least `context / 2` tokens before it. Perplexity is exp of the mean
//! negative log-likelihood over all scored tokens; its standard error comes from the spread of
//! the per-token values (`nemo perplexity`, docs/cli.md).

use crate::engine::{Backend, EngineError};

/// How the text is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    /// Tokens per window, BOS included (at least 4).
    pub context: usize,
    /// Score at most this many windows (None: every whole window of the text).
    pub max_windows: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum PerplexityError {
    #[error("a window of {0} tokens is too small: use at least 4")]
    ContextTooSmall(usize),
    #[error("the window of {context} tokens is more than the model's {max}-token context")]
    ContextTooLarge { context: usize, max: usize },
    #[error("the text is {tokens} tokens; one window of {context} needs {need}: give a longer text or a smaller --context")]
    TextTooShort { tokens: usize, context: usize, need: usize },
    #[error("scoring window {window}: {source}")]
    Window { window: usize, source: EngineError },
}

/// What one window contributed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowScore {
    pub index: usize,
    /// Tokens scored in it.
    pub scored: usize,
    /// Sum of their negative log-likelihoods (nats).
    pub nll_sum: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    pub perplexity: f64,
    /// Standard error of the perplexity (delta method on the mean NLL), as llama.cpp prints it.
    pub std_error: f64,
    /// Mean negative log-likelihood per scored token, in nats.
    pub mean_nll: f64,
    pub tokens_scored: usize,
    pub windows: usize,
    pub context: usize,
    /// Text tokens after the last whole window, not scored.
    pub tokens_left_out: usize,
}

impl Windows {
    /// The text tokens each window takes (after its BOS, if `bos`), and how many are left at the end.
    pub fn split(&self, tokens: usize, bos: bool, max_context: usize) -> Result<(Vec<std::ops::Range<usize>>, usize), PerplexityError> {
        let context = self.context;
        if context < 4 {
            return Err(PerplexityError::ContextTooSmall(context));
        }
        if context > max_context {
            return Err(PerplexityError::ContextTooLarge { context, max: max_context });
        }
        let per = context - bos as usize;
        let whole = tokens / per;
        if whole == 0 {
            return Err(PerplexityError::TextTooShort { tokens, context, need: per });
        }
        let n = self.max_windows.map_or(whole, |m| m.min(whole));
        Ok(((0..n).map(|w| w * per..(w + 1) * per).collect(), tokens - n * per))
    }
}

/// Scores `tokens` (the text, no BOS) window by window on `backend`, each window opened by
/// `bos` if given, calling `progress` after each window with the scores so far.
pub fn perplexity(
    backend: &mut dyn Backend,
    bos: Option<u32>,
    tokens: &[u32],
    windows: Windows,
    progress: &mut dyn FnMut(&WindowScore, &Perplexity),
) -> Result<Perplexity, PerplexityError> {
    let (ranges, left_out) = windows.split(tokens.len(), bos.is_some(), backend.config().max_context)?;
    let first = windows.context / 2; // the window's positions 0..first are context only
    let (mut sum, mut sum_sq, mut count) = (0f64, 0f64, 0usize);
    let mut result = summary(0.0, 0.0, 0, 0, windows.context, left_out);
    for (index, range) in ranges.iter().enumerate() {
        let window: Vec<u32> = bos.into_iter().chain(tokens[range.clone()].iter().copied()).collect();
        backend.reset();
        backend.forward(&window[..first]).map_err(|e| window_error(index, e))?;
        let n = window.len();
        let scores = backend.score(&window[first..n - 1], &window[first + 1..]).map_err(|e| window_error(index, e))?;
        let nll_sum: f64 = scores.iter().map(|&lp| -(lp as f64)).sum();
        sum += nll_sum;
        sum_sq += scores.iter().map(|&lp| (lp as f64) * (lp as f64)).sum::<f64>();
        count += scores.len();
        result = summary(sum, sum_sq, count, index + 1, windows.context, left_out);
        progress(&WindowScore { index, scored: scores.len(), nll_sum }, &result);
    }
    backend.reset();
    Ok(result)
}

fn window_error(index: usize, source: EngineError) -> PerplexityError {
    PerplexityError::Window { window: index + 1, source }
}

fn summary(sum: f64, sum_sq: f64, count: usize, windows: usize, context: usize, tokens_left_out: usize) -> Perplexity {
    let n = count.max(1) as f64;
    let mean = sum / n;
    let variance = (sum_sq / n - mean * mean).max(0.0);
    let perplexity = mean.exp();
    // d exp(m) = exp(m) dm; the mean's standard error is sqrt(var / (n - 1)).
    let std_error = if count > 1 { perplexity * (variance / (n - 1.0)).sqrt() } else { 0.0 };
    Perplexity { perplexity, std_error, mean_nll: mean, tokens_scored: count, windows, context, tokens_left_out }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_text_without_overlap_and_say_what_is_left() {
        let w = Windows { context: 5, max_windows: None };
        assert_eq!(w.split(10, true, 100).unwrap(), (vec![0..4, 4..8], 2));
        assert_eq!(w.split(10, false, 100).unwrap(), (vec![0..5, 5..10], 0));
        assert_eq!(Windows { max_windows: Some(1), ..w }.split(10, true, 100).unwrap(), (vec![0..4], 6));
        assert!(matches!(w.split(3, true, 100), Err(PerplexityError::TextTooShort { tokens: 3, context: 5, need: 4 })));
        assert!(matches!(Windows { context: 3, max_windows: None }.split(10, true, 100), Err(PerplexityError::ContextTooSmall(3))));
        assert!(matches!(w.split(10, true, 4), Err(PerplexityError::ContextTooLarge { context: 5, max: 4 })));
    }

    #[test]
    fn the_summary_is_exp_of_the_mean_nll_with_its_standard_error() {
        // NLLs 1, 2, 3: mean 2, variance 2/3, standard error of the mean sqrt((2/3) / 2).
        let s = summary(6.0, 14.0, 3, 1, 8, 0);
        assert!((s.perplexity - 2f64.exp()).abs() < 1e-12);
        assert!((s.std_error - 2f64.exp() * (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(summary(0.0, 0.0, 0, 0, 8, 0).std_error, 0.0);
    }
}
