//! Text from the nodes shown on a terminal. A log line or a command's output may carry
//! control characters (an escape sequence that retitles the window, moves the cursor,
//! rewrites lines already shown, or on some terminals answers back as typed input):
//! on a terminal they are shown, not obeyed. Into a pipe or a file the bytes go as they
//! are, and `--json` carries them escaped by JSON. And single keys typed at the
//! terminal, for `top`'s `q`.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::sync::OnceLock;

/// Whether standard output (or error) is a terminal, asked once.
pub fn stdout_is_terminal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| std::io::stdout().is_terminal())
}

/// Whether standard error is a terminal, asked once.
pub fn stderr_is_terminal() -> bool {
    static IS: OnceLock<bool> = OnceLock::new();
    *IS.get_or_init(|| std::io::stderr().is_terminal())
}

/// `bytes` with every control character but tab and newline written as `\xNN` (C0 and
/// DEL) or `\u{NN}` (C1, which some terminals obey as the 7-bit sequences), and bytes
/// that are not UTF-8 as U+FFFD: nothing a terminal acts on is left.
pub fn visible(bytes: &[u8]) -> Cow<'_, [u8]> {
    let clean = |c: char| !c.is_control() || c == '\t' || c == '\n';
    match std::str::from_utf8(bytes) {
        Ok(s) if s.chars().all(clean) => Cow::Borrowed(bytes),
        _ => {
            let text = String::from_utf8_lossy(bytes);
            let mut out = String::with_capacity(text.len() + 8);
            for c in text.chars() {
                if clean(c) {
                    out.push(c);
                } else if (c as u32) < 0x80 {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                } else {
                    out.push_str(&format!("\\u{{{:x}}}", c as u32));
                }
            }
            Cow::Owned(out.into_bytes())
        }
    }
}

/// [`visible`] for a line of text.
pub fn visible_str(s: &str) -> Cow<'_, str> {
    match visible(s.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(b) => Cow::Owned(String::from_utf8(b).unwrap_or_default()),
    }
}

/// Keys typed on the terminal, one at a time, for `top`'s `q`: standard input without
/// line editing or echo while this lives (Ctrl-C still signals), restored as it was
/// when dropped.
pub struct Keys {
    saved: rustix::termios::Termios,
    /// Becomes true when `q` is typed.
    pub quit: tokio::sync::watch::Receiver<bool>,
}

impl Keys {
    /// Starts reading keys, if standard input is a terminal.
    pub fn start() -> Option<Keys> {
        use rustix::termios::{LocalModes, OptionalActions, SpecialCodeIndex};
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = rustix::termios::tcgetattr(&stdin).ok()?;
        let mut keys = saved.clone();
        keys.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO);
        keys.special_codes[SpecialCodeIndex::VMIN] = 1;
        keys.special_codes[SpecialCodeIndex::VTIME] = 0;
        rustix::termios::tcsetattr(&stdin, OptionalActions::Now, &keys).ok()?;
        let (tx, quit) = tokio::sync::watch::channel(false);
        // A blocking read, on a thread of its own: it ends with the process.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut key = [0u8; 1];
            loop {
                match std::io::stdin().read(&mut key) {
                    Ok(1) if matches!(key[0], b'q' | b'Q') => {
                        let _ = tx.send(true);
                        return;
                    }
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        });
        Some(Keys { saved, quit })
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            std::io::stdin(),
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Long output (a plan, a drift report) shown through a pager on a terminal, as git
/// does: `$PAGER` (`less` by default, with `LESS=FRX` unless set, so output that fits
/// the screen is printed as it is), standard output handed to it until this is
/// finished.
pub struct Pager {
    child: std::process::Child,
}

impl Pager {
    /// Starts the pager when standard output is a terminal and paging is wanted;
    /// `None` otherwise (or when the pager cannot start: the output goes straight
    /// out then).
    pub fn start(wanted: bool) -> Option<Pager> {
        if !wanted || !stdout_is_terminal() {
            return None;
        }
        let command = std::env::var("PAGER").unwrap_or_else(|_| "less".into());
        if command.trim().is_empty() || command.trim() == "cat" {
            return None;
        }
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&command)
            .stdin(std::process::Stdio::piped());
        if std::env::var_os("LESS").is_none() {
            cmd.env("LESS", "FRX");
        }
        let mut child = cmd.spawn().ok()?;
        let pipe = child.stdin.take()?;
        if rustix::stdio::dup2_stdout(&pipe).is_err() {
            let _ = child.kill();
            return None;
        }
        Some(Pager { child })
    }

    /// Ends the output and waits for the reader to leave the pager.
    pub fn finish(mut self) {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        // Standard output on /dev/null closes the pager's input: it sees the end.
        if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
            let _ = rustix::stdio::dup2_stdout(&null);
        }
        let _ = self.child.wait();
    }
}

/// Per-node progress of long work (`node add --from`, `apply`, `node upgrade`) on
/// standard error: on a terminal, a block of one line per node, redrawn in place, under
/// a line counting the nodes done; elsewhere one plain line per step.
pub struct Progress {
    title: String,
    live: bool,
    /// One node after another, in the order given: the next starts when one ends.
    sequential: bool,
    state: std::sync::Mutex<ProgressState>,
}

#[derive(Default)]
struct ProgressState {
    /// Each node and what it is doing, or how it ended.
    lines: Vec<(String, String, bool)>,
    /// How many lines the block took when last drawn.
    drawn: usize,
}

impl Progress {
    /// Progress of `title` over `nodes`, all at once or `sequential`ly; live when
    /// standard error is a terminal and `plain` is false.
    pub fn new(title: &str, nodes: &[String], sequential: bool, plain: bool) -> Progress {
        let p = Progress {
            title: title.to_string(),
            live: !plain && stderr_is_terminal(),
            sequential,
            state: std::sync::Mutex::new(ProgressState {
                lines: nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let first = !sequential || i == 0;
                        (
                            n.clone(),
                            if first { "working" } else { "waiting" }.to_string(),
                            false,
                        )
                    })
                    .collect(),
                drawn: 0,
            }),
        };
        if p.live {
            let mut st = p.state.lock().unwrap_or_else(|e| e.into_inner());
            p.draw(&mut st);
        }
        p
    }

    /// `node` is at `step` (`done`: it ended so).
    pub fn step(&self, node: &str, step: &str, done: bool) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match st.lines.iter_mut().find(|(n, _, _)| n == node) {
            Some(line) => *line = (node.to_string(), step.to_string(), done),
            None => st.lines.push((node.to_string(), step.to_string(), done)),
        }
        if done
            && self.sequential
            && let Some(next) = st.lines.iter_mut().find(|(_, s, d)| !d && s == "waiting")
        {
            next.1 = "working".into();
        }
        if self.live {
            self.draw(&mut st);
        } else if !done {
            // Plain lines say the steps; the report that follows says how each ended.
            eprintln!("{node}: {step}");
        }
    }

    fn draw(&self, st: &mut ProgressState) {
        use std::io::Write;
        let width = terminal_size::terminal_size().map_or(80, |(w, _)| usize::from(w.0));
        let out = self.block(st, width);
        st.drawn = st.lines.len() + 1;
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(out.as_bytes());
        let _ = err.flush();
    }

    /// The block as drawn over the previous one, each line cut to `width`.
    fn block(&self, st: &ProgressState, width: usize) -> String {
        let done = st.lines.iter().filter(|(_, _, d)| *d).count();
        let mut out = String::new();
        if st.drawn > 0 {
            out.push_str(&format!("\x1b[{}A", st.drawn));
        }
        let bar_width = 20;
        let filled = (done * bar_width).checked_div(st.lines.len()).unwrap_or(0);
        out.push_str(&format!(
            "\r{} [{}{}] {done}/{}\x1b[K\n",
            self.title,
            "#".repeat(filled),
            "-".repeat(bar_width - filled),
            st.lines.len()
        ));
        for (node, step, finished) in &st.lines {
            let mark = if *finished { "done" } else { "...." };
            let line: String = format!("  {mark} {node}: {step}")
                .chars()
                .take(width.saturating_sub(1))
                .collect();
            out.push_str(&format!("\r{line}\x1b[K\n"));
        }
        out
    }

    /// Removes the block (the report that follows says how each node ended).
    pub fn finish(&self) {
        use std::io::Write;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if self.live && st.drawn > 0 {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\x1b[{}A\r\x1b[J", st.drawn);
            let _ = err.flush();
            st.drawn = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_redraws_its_block_in_place_and_starts_the_next_in_turn() {
        let nodes = vec!["gluu1".to_string(), "gluu2".to_string()];
        let p = Progress::new("apply --rolling", &nodes, true, true);
        p.step("gluu1", "applied (revision 3)", true);
        let mut st = p.state.lock().unwrap();
        assert_eq!(
            st.lines[1].1, "working",
            "the next node starts when one ends"
        );
        let first = p.block(&st, 40);
        assert!(
            first.starts_with("\rapply --rolling [##########----------] 1/2\x1b[K\n"),
            "{first:?}"
        );
        assert!(
            first.contains("  done gluu1: applied (revision 3)"),
            "{first:?}"
        );
        assert!(first.contains("  .... gluu2: working"), "{first:?}");
        st.drawn = 3;
        // Drawn again over itself: up three lines, each line cleared to its end.
        assert!(p.block(&st, 40).starts_with("\x1b[3A\r"));
        assert!(
            p.block(&st, 12).contains("\r  done gluu\x1b[K"),
            "cut to the width"
        );
    }

    #[test]
    fn escape_sequences_are_shown_not_obeyed() {
        assert!(matches!(visible(b"plain\ttext\n"), Cow::Borrowed(_)));
        let shown = visible(b"\x1b]0;owned\x07\x1b[2J\rover\x7f");
        assert_eq!(
            std::str::from_utf8(&shown).unwrap(),
            "\\x1b]0;owned\\x07\\x1b[2J\\x0dover\\x7f"
        );
        // C1's CSI in UTF-8, and bytes that are not UTF-8.
        let shown = visible("a\u{9b}31m".as_bytes());
        assert_eq!(std::str::from_utf8(&shown).unwrap(), "a\\u{9b}31m");
        let shown = visible(b"\xff\x9b");
        assert!(!shown.iter().any(|&b| b < 0x20 || b == 0x9b), "{shown:?}");
        assert_eq!(visible_str("é ok"), "é ok");
    }
}
