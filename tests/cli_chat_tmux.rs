//! `nemo chat` in a real terminal: tmux runs it on a pseudo-terminal (its own server socket, so
//! nothing of a user's tmux is touched), keys are typed into it, and the screen is read back.
//! On a terminal the `> ` prompt is shown; the demo model answers; /reset and Ctrl-D work and
//! the process exits 0.
//!
//! Skipped, with a notice, where tmux is not installed (`apt-get install tmux`). Needs the
//! demo model (scripts/setup.sh).

mod cli_support;

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> Output {
        Command::new("tmux").args(["-L", &self.socket]).args(args).output().expect("run tmux")
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.run(&["capture-pane", "-p", "-J", "-S", "-200", "-t", "chat"]).stdout).into_owned()
    }

    /// Waits until `done(screen)` holds; panics with the screen after `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, done: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(start.elapsed() < timeout, "timed out waiting for {what}; screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn keys(&self, keys: &[&str]) {
        let out = self.run(&[&["send-keys", "-t", "chat"][..], keys].concat());
        assert!(out.status.success(), "send-keys: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn chat_in_a_real_terminal() {
    if Command::new("tmux").arg("-V").output().map_or(true, |o| !o.status.success()) {
        eprintln!("skipped: tmux is not installed, so `nemo chat` is not tried in a terminal here");
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let bin = cli_support::nemo_bin();
    // The shell keeps the pane open after nemo exits, with its exit status on screen.
    let command = format!(
        "'{}' chat --temperature 0 --max-tokens 32 --device cpu; echo \"EXIT:$?\"; sleep 60",
        bin.display()
    );
    let tmux = Tmux { socket: format!("nemo-test-{}", std::process::id()) };
    let out = tmux.run(&[
        "new-session", "-d", "-s", "chat", "-x", "160", "-y", "48", "-c", root.to_str().unwrap(), &command,
    ]);
    assert!(out.status.success(), "tmux new-session: {}", String::from_utf8_lossy(&out.stderr));

    let long = Duration::from_secs(120);
    tmux.wait_for("the prompt", long, |s| s.lines().any(|l| l == ">"  || l == "> "));
    tmux.keys(&["What is the capital of France?", "Enter"]);
    let screen = tmux.wait_for("the answer and the next prompt", long, |s| {
        s.contains("The capital of France is Paris.") && s.trim_end().ends_with('>')
    });
    assert!(screen.contains("> What is the capital of France?"), "{screen}");
    tmux.keys(&["/reset", "Enter"]);
    tmux.wait_for("the reset notice", long, |s| s.contains("conversation reset"));
    tmux.keys(&["C-d"]);
    let screen = tmux.wait_for("nemo to exit", long, |s| s.contains("EXIT:"));
    assert!(screen.contains("EXIT:0"), "{screen}");
    assert!(screen.contains("0 turns in the conversation"), "after /reset: {screen}");
}
