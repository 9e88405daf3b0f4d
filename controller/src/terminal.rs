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

#[cfg(test)]
mod tests {
    use super::*;

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
