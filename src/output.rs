//! The one output layer: every byte kz prints goes through [`Shell`], which picks UTF-8 or ASCII,
//! colour or not, masks secrets, and draws apply progress (indicatif on a terminal, plain lines
//! otherwise).

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kz_engine::apply::Event;
use kz_engine::render::{Redactor, Style, render_event};
use tokio::sync::mpsc;

use crate::cli::ColorChoice;

pub struct Shell {
    pub style: Style,
    redactor: Mutex<Redactor>,
}

/// Whether the locale promises UTF-8; the operators' Windows consoles turned UTF-8 into garbage.
fn locale_is_utf8() -> bool {
    for var in ["LC_ALL", "LC_CTYPE", "LANG"] {
        if let Ok(v) = std::env::var(var)
            && !v.is_empty()
        {
            let v = v.to_ascii_lowercase();
            return v.contains("utf-8") || v.contains("utf8");
        }
    }
    false
}

impl Shell {
    pub fn new(ascii: bool, color: ColorChoice) -> Shell {
        let color = match color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && std::io::stdout().is_terminal()
                    && std::env::var("TERM").map_or(true, |t| t != "dumb")
            }
        };
        Shell {
            style: Style {
                ascii: ascii || !locale_is_utf8(),
                color,
            },
            redactor: Mutex::new(Redactor::default()),
        }
    }

    /// Secrets to mask in everything printed from now on.
    pub fn set_secrets(&self, secrets: Vec<String>) {
        // Text is escaped before it is printed (control characters, and non-ASCII in ASCII mode),
        // so the escaped forms of each secret are masked too.
        if let Ok(mut r) = self.redactor.lock() {
            *r = Redactor::for_style(secrets, &self.style);
        }
    }

    fn redact(&self, text: &str) -> String {
        self.redactor
            .lock()
            .map_or_else(|_| text.to_string(), |r| r.redact(text))
    }

    /// Text for standard output, printed as given (add the newline yourself).
    pub fn out(&self, text: &str) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(self.redact(text).as_bytes());
        let _ = o.flush();
    }

    pub fn outln(&self, text: &str) {
        self.out(&format!("{text}\n"));
    }

    /// A message for standard error.
    pub fn errln(&self, text: &str) {
        let mut e = std::io::stderr().lock();
        let _ = writeln!(e, "{}", self.redact(text));
    }

    pub fn error(&self, text: &str) {
        let prefix = self.style.red("error:");
        self.errln(&format!("{prefix} {}", self.style.safe(text)));
    }

    pub fn warn(&self, text: &str) {
        let prefix = self.style.yellow("warning:");
        self.errln(&format!("{prefix} {}", self.style.safe(text)));
    }

    /// Asks for `yes` on the terminal; `None` when there is no terminal to ask on.
    pub fn confirm(&self, question: &str) -> Option<bool> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        self.out(&format!("{question}\n  Only 'yes' will be accepted: "));
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).ok()?;
        Some(line.trim() == "yes")
    }

    /// Draws apply events until the channel closes: a progress bar on a terminal, one line per
    /// event otherwise.
    pub async fn draw_progress(&self, total: usize, mut events: mpsc::UnboundedReceiver<Event>) {
        let tty = std::io::stdout().is_terminal();
        let bar = if tty {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            let chars = if self.style.ascii {
                "|/-\\ "
            } else {
                "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏ "
            };
            let template = if self.style.ascii {
                "{spinner} [{elapsed_precise}] {pos}/{len} {wide_msg}"
            } else {
                "{spinner} [{elapsed_precise}] {bar:20} {pos}/{len} {wide_msg}"
            };
            if let Ok(s) = ProgressStyle::with_template(template) {
                bar.set_style(s.tick_chars(chars).progress_chars("=> "));
            }
            bar.enable_steady_tick(std::time::Duration::from_millis(120));
            Some(bar)
        } else {
            None
        };
        while let Some(e) = events.recv().await {
            let line = self.redact(&render_event(&e, &self.style));
            match (&bar, &e) {
                (Some(b), Event::Started { address, .. }) => {
                    b.set_message(self.style.safe(address));
                }
                (Some(b), Event::Interrupted { .. }) => b.println(line),
                (Some(b), _) => {
                    b.println(line);
                    b.inc(1);
                }
                (None, _) => self.outln(&line),
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
}
