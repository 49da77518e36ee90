//! Stop strings over streamed text. Text is released as soon as it cannot be the start of a
//! stop string; the tail that still could be is held back until the next piece decides. When a
//! stop string appears, the text before it is released and the rest (the stop string included)
//! is dropped, as OpenAI's API and vLLM do by default.
//!
//! Why holding back is enough: any match that would begin in released text would make that
//! text's suffix a prefix of a stop string, and the longest such suffix is exactly what is held.

#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

/// What one [`StopMatcher::push`] gives back.
#[derive(Debug, PartialEq, Eq)]
pub struct Released {
    pub text: String,
    /// A stop string was found: nothing more will be released.
    pub stopped: bool,
}

impl StopMatcher {
    /// Empty stop strings must be refused by the caller (they would match everywhere).
    pub fn new(stops: Vec<String>) -> Self {
        debug_assert!(stops.iter().all(|s| !s.is_empty()));
        StopMatcher { stops, held: String::new(), stopped: false }
    }

    pub fn push(&mut self, text: &str) -> Released {
        if self.stopped {
            return Released { text: String::new(), stopped: true };
        }
        if self.stops.is_empty() {
            return Released { text: text.to_string(), stopped: false };
        }
        self.held.push_str(text);
        let first = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min();
        if let Some(at) = first {
            let text = self.held[..at].to_string();
            self.held.clear();
            self.stopped = true;
            return Released { text, stopped: true };
        }
        let keep = self.longest_partial_suffix();
        let text = self.held[..self.held.len() - keep].to_string();
        self.held.drain(..self.held.len() - keep);
        Released { text, stopped: false }
    }

    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// End of the text: whatever was held back was not a stop string after all.
    pub fn flush(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Bytes at the end of `held` that are a proper prefix of some stop string.
    fn longest_partial_suffix(&self) -> usize {
        let held = self.held.as_str();
        let mut best = 0;
        for stop in &self.stops {
            let most = (stop.len() - 1).min(held.len());
            for len in (best + 1..=most).rev() {
                let start = held.len() - len;
                if held.is_char_boundary(start) && stop.starts_with(&held[start..]) {
                    best = len;
                    break;
                }
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (String, bool) {
        let mut m = StopMatcher::new(stops.iter().map(|s| s.to_string()).collect());
        let mut out = String::new();
        for p in pieces {
            let r = m.push(p);
            out += &r.text;
            if r.stopped {
                return (out, true);
            }
        }
        out += &m.flush();
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_pieces_is_found_and_cut() {
        assert_eq!(run(&["END"], &["abc E", "N", "D tail"]), ("abc ".into(), true));
        assert_eq!(run(&["\n\n"], &["a\n", "\nb"]), ("a".into(), true));
        // The earliest match wins, whichever stop string it is.
        assert_eq!(run(&["xyz", "b"], &["a", "bxyz"]), ("a".into(), true));
    }

    #[test]
    fn held_back_text_is_released_when_it_turns_out_harmless() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abcE").text, "abc");
        assert_eq!(m.push("N").text, "");
        assert_eq!(m.push("x").text, "ENx");
        assert_eq!(m.push("EN").text, "");
        assert_eq!(m.flush(), "EN");
        assert_eq!(run(&["END"], &["E", "E", "N", "x"]), ("EENx".into(), false));
    }

    #[test]
    fn multibyte_text_is_never_split_inside_a_character() {
        // "é" (two bytes) may start the stop string: it is held back whole, never half of it.
        assert_eq!(run(&["éZ"], &["aé", "b"]), ("aéb".into(), false));
        assert_eq!(run(&["éZ"], &["aé", "Zc"]), ("a".into(), true));
        assert_eq!(run(&["🙂!"], &["x🙂", "!"]), ("x".into(), true));
    }

    #[test]
    fn without_stop_strings_text_passes_through() {
        let mut m = StopMatcher::new(vec![]);
        assert_eq!(m.push("abc"), Released { text: "abc".into(), stopped: false });
        assert_eq!(m.flush(), "");
    }

    #[test]
    fn nothing_is_released_after_a_stop() {
        let mut m = StopMatcher::new(vec!["x".into()]);
        assert!(m.push("ax").stopped);
        assert_eq!(m.push("more"), Released { text: String::new(), stopped: true });
        assert_eq!(m.flush(), "");
    }
}
