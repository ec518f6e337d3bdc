//! Masking secrets in everything bound for the screen or a log.

use super::Style;

/// Replaces every known secret value in text bound for the screen or a log.
///
/// A value is masked whole, and in the forms output gives it: each line of a multi-line value
/// (error messages show a script's first line, the last lines of a command's output: a PEM key
/// cut there must not print its other lines), and each of those escaped as text plans (`{:?}`)
/// and JSON escape strings (`\"`, `\\`, `\n`), so that a quote or a backslash in a secret does
/// not slip it past the mask.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    secrets: Vec<String>,
}

/// The lines of a multi-line secret worth masking on their own: trimmed, and no shorter than a
/// secret may be (a `}` or an empty line would mask half of every output, and tell nothing).
fn secret_lines(secret: &str) -> impl Iterator<Item = &str> {
    let multi = secret.contains('\n') || secret.contains('\r');
    secret
        .split(['\n', '\r'])
        .map(str::trim)
        .filter(move |l| multi && l.chars().count() >= crate::secrets::MIN_SECRET_LEN)
}

/// The text between the quotes of a quoted, escaped string.
fn unquoted(quoted: &str) -> String {
    let inner = quoted.strip_prefix('"').unwrap_or(quoted);
    inner.strip_suffix('"').unwrap_or(inner).to_string()
}

/// Every form of a secret that output may show.
fn secret_forms(secret: &str) -> Vec<String> {
    let mut forms = Vec::new();
    for part in std::iter::once(secret).chain(secret_lines(secret)) {
        forms.push(part.to_string());
        // Text plans show strings as Rust string literals, JSON as JSON strings.
        forms.push(unquoted(&format!("{part:?}")));
        forms.push(unquoted(
            &serde_json::to_string(part).unwrap_or_else(|_| part.to_string()),
        ));
    }
    forms
}

impl Redactor {
    /// Masks `secrets` and their forms (see [`Redactor`]).
    pub fn new(secrets: Vec<String>) -> Redactor {
        Redactor::with_escape(secrets, |s| s.to_string())
    }

    /// Masks `secrets`, their forms, and those forms as `style` escapes text to print it (control
    /// characters, and non-ASCII characters in ASCII mode).
    pub fn for_style(secrets: Vec<String>, style: &Style) -> Redactor {
        Redactor::with_escape(secrets, |s| style.safe(s))
    }

    fn with_escape(secrets: Vec<String>, escape: impl Fn(&str) -> String) -> Redactor {
        let mut all: Vec<String> = Vec::new();
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            for form in secret_forms(secret) {
                let escaped = escape(&form);
                if escaped != form {
                    all.push(escaped);
                }
                all.push(form);
            }
        }
        all.retain(|s| !s.is_empty());
        // Longest first, so a secret containing another (or its own line) is masked whole.
        all.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        all.dedup();
        Redactor { secrets: all }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "(sensitive)");
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::Style;

    #[test]
    fn redactor_masks_escaped_forms() {
        let secret = r#"pa"ss\w0rd"#;
        let r = Redactor::new(vec![secret.into()]);
        // As a text plan shows it, and as JSON does.
        let text = format!("content: {:?}", format!("x={secret}"));
        assert_eq!(r.redact(&text), r#"content: "x=(sensitive)""#);
        let json = serde_json::json!({ "content": format!("x={secret}") }).to_string();
        assert_eq!(r.redact(&json), r#"{"content":"x=(sensitive)"}"#);
        // ASCII mode escapes non-ASCII characters: that form is masked too.
        let ascii = Style {
            ascii: true,
            color: false,
        };
        let r = Redactor::for_style(vec!["Grüße-\"geheim\"".into()], &ascii);
        let shown = ascii.safe(&format!("{:?}", "Grüße-\"geheim\""));
        assert_eq!(r.redact(&shown), "\"(sensitive)\"");
    }

    #[test]
    fn redactor_masks_each_line_of_a_multi_line_secret() {
        let key =
            "-----BEGIN KEY-----\r\nAAAAline1secret\nBBBBline2secret\nshort\n-----END KEY-----\n";
        let r = Redactor::new(vec![key.into()]);
        assert_eq!(r.redact(key), "(sensitive)");
        // A tail that cut the key, a first line alone, the lines joined as a note joins them.
        assert_eq!(
            r.redact("BBBBline2secret\nshort\n-----END KEY-----"),
            "(sensitive)\nshort\n(sensitive)"
        );
        assert_eq!(
            r.redact("echo '-----BEGIN KEY----- ..."),
            "echo '(sensitive) ..."
        );
        assert_eq!(
            r.redact("exit 1: AAAAline1secret / BBBBline2secret"),
            "exit 1: (sensitive) / (sensitive)"
        );
        // The text plan's escaped form of the whole.
        assert!(!r.redact(&format!("{key:?}")).contains("line"));
        // A short line alone is no secret to mask.
        assert_eq!(r.redact("short"), "short");
    }

    #[test]
    fn redactor_masks_every_occurrence() {
        let r = Redactor::new(vec!["hunter2".into(), String::new()]);
        assert_eq!(r.redact("pw=hunter2;hunter2"), "pw=(sensitive);(sensitive)");
    }
}
