//! Structure of a `[{...}, {...}]` tool-call list as its text arrives: enough to report each
//! object's `name`, its `arguments` text and its end, whatever the split into tokens.

use super::super::json_py::PyJson;

pub(super) enum ScanEvent {
    Name { index: usize, name: String },
    Args { index: usize, delta: String },
    ObjectClosed { index: usize, text: String },
}

/// Tracks the structure of a `[{...}, {...}]` list as its text arrives, enough to report each
/// object's `name`, its `arguments` text and its end. It does not validate: the whole-output
/// parse does.
#[derive(Debug, Default)]
pub(super) struct ListScanner {
    depth: usize,
    in_string: bool,
    escape: bool,
    /// Current object's text (from its `{`).
    obj: String,
    /// Key being read at object level, and the last complete one.
    key_buf: Option<String>,
    key: Option<String>,
    expect_key: bool,
    /// Inside the value of the current key (after ':' at object level).
    in_value: bool,
    value_buf: String,
    value_started: bool,
    name_known: bool,
    /// Arguments text seen before the name was known.
    held_args: String,
    index: usize,
    objects_done: usize,
}

impl ListScanner {
    pub(super) fn new_segment(&mut self) {
        let done = self.objects_done;
        *self = ListScanner { objects_done: done, index: done, ..Default::default() };
    }

    pub(super) fn feed(&mut self, text: &str) -> Vec<ScanEvent> {
        let mut ev = Vec::new();
        let mut args_delta = String::new();
        for c in text.chars() {
            let was_in_string = self.in_string;
            let depth_before = self.depth;
            if was_in_string {
                if self.escape {
                    self.escape = false;
                } else if c == '\\' {
                    self.escape = true;
                } else if c == '"' {
                    self.in_string = false;
                }
                if let Some(k) = self.key_buf.as_mut() {
                    k.push(c);
                }
            } else if c == '"' {
                self.in_string = true;
                if depth_before == 2 && self.expect_key {
                    self.key_buf = Some(String::from('"'));
                }
            }
            // A ',' or '}' at object level ends the current value and is not part of it.
            let terminator = !was_in_string && depth_before == 2 && matches!(c, ',' | '}');
            if self.in_value && depth_before >= 2 && !terminator {
                self.value_buf.push(c);
                if self.key.as_deref() == Some("arguments") && (self.value_started || !c.is_whitespace()) {
                    self.value_started = true;
                    args_delta.push(c);
                }
            }
            if depth_before >= 2 {
                self.obj.push(c);
            }
            if was_in_string {
                continue;
            }
            match c {
                '[' | '{' => {
                    self.depth += 1;
                    if self.depth == 2 && c == '{' {
                        self.obj = String::from('{');
                        self.expect_key = true;
                        self.key = None;
                        self.in_value = false;
                        self.name_known = false;
                        self.held_args.clear();
                    }
                }
                ']' | '}' => {
                    if depth_before == 2 && c == '}' {
                        self.end_value(&mut ev, &mut args_delta);
                        self.flush_args(&mut ev, &mut args_delta);
                        ev.push(ScanEvent::ObjectClosed { index: self.index, text: std::mem::take(&mut self.obj) });
                        self.index += 1;
                        self.objects_done += 1;
                    }
                    self.depth = self.depth.saturating_sub(1);
                }
                ',' if depth_before == 2 => {
                    self.end_value(&mut ev, &mut args_delta);
                    self.expect_key = true;
                }
                ':' if depth_before == 2 && self.expect_key => {
                    self.key = self
                        .key_buf
                        .take()
                        .and_then(|k| PyJson::parse(&k).ok())
                        .and_then(|k| k.as_str().map(String::from));
                    self.expect_key = false;
                    self.in_value = true;
                    self.value_buf.clear();
                    self.value_started = false;
                }
                _ => {}
            }
        }
        self.flush_args(&mut ev, &mut args_delta);
        ev
    }

    fn end_value(&mut self, ev: &mut Vec<ScanEvent>, args_delta: &mut String) {
        if !self.in_value {
            return;
        }
        self.in_value = false;
        if self.key.as_deref() == Some("name") && !self.name_known {
            if let Ok(PyJson::Str(name)) = PyJson::parse(self.value_buf.trim()) {
                self.name_known = true;
                ev.push(ScanEvent::Name { index: self.index, name });
                let held = std::mem::take(&mut self.held_args);
                if !held.is_empty() {
                    ev.push(ScanEvent::Args { index: self.index, delta: held });
                }
            }
        }
        self.flush_args(ev, args_delta);
    }

    fn flush_args(&mut self, ev: &mut Vec<ScanEvent>, args_delta: &mut String) {
        if args_delta.is_empty() {
            return;
        }
        if self.name_known {
            ev.push(ScanEvent::Args { index: self.index, delta: std::mem::take(args_delta) });
        } else {
            self.held_args.push_str(&std::mem::take(args_delta));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(chunks: &[&str]) -> (Vec<String>, Vec<(usize, String)>, Vec<String>) {
        let mut s = ListScanner::default();
        let (mut names, mut args, mut objs): (Vec<String>, Vec<(usize, String)>, Vec<String>) =
            (vec![], vec![], vec![]);
        for c in chunks {
            for e in s.feed(c) {
                match e {
                    ScanEvent::Name { name, .. } => names.push(name),
                    ScanEvent::Args { index, delta } => match args.last_mut() {
                        Some((i, d)) if *i == index => d.push_str(&delta),
                        _ => args.push((index, delta)),
                    },
                    ScanEvent::ObjectClosed { text, .. } => objs.push(text),
                }
            }
        }
        (names, args, objs)
    }

    #[test]
    fn scanner_reports_names_arguments_and_objects_across_any_split() {
        let text = r#"[{"name": "get_weather", "arguments": {"city": "Paris, \"FR\"", "n": [1, {"x": "}"}]}, "id": "abc123DEF"}, {"arguments": {"a": 1}, "name": "b"}]"#;
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let refs: Vec<&str> = chars.iter().map(|s| s.as_str()).collect();
        for split in [vec![text], refs] {
            let (names, args, objs) = scan_all(&split);
            assert_eq!(names, ["get_weather", "b"]);
            assert_eq!(
                args,
                [(0, r#"{"city": "Paris, \"FR\"", "n": [1, {"x": "}"}]}"#.to_string()), (1, r#"{"a": 1}"#.to_string())]
            );
            assert_eq!(objs.len(), 2);
            assert!(PyJson::parse(&objs[0]).is_ok() && PyJson::parse(&objs[1]).is_ok(), "{objs:?}");
        }
    }
}
