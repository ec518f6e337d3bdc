//! Names and words: what a name may hold, suggestions for a misspelt one, and serde's messages
//! reworded for people who write TOML.

/// Names of stacks, modules and resources: they appear in addresses, so no dots or brackets.
pub(crate) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// ", did you mean `x`?" when a known name is close to the unknown one.
pub fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a String>) -> String {
    known
        .map(|k| (edit_distance(unknown, k), k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Rewrites serde's wording for people who write TOML, not Rust: no `i64` or `sequence`.
pub(crate) fn friendly_message(message: &str, found: &str) -> String {
    if message == "missing field `stack`" {
        return "missing table [stack] (every stack.toml needs [stack] with a name)".into();
    }
    if message == "duplicate key" {
        return format!("duplicate key `{}`", found.trim());
    }
    if message.contains(" as i128, expected i64") || message.contains(" as u128, expected i64") {
        return format!("integer {} is out of range", found.trim());
    }
    message
        .replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected a list")
        .replace("expected a map", "expected a table")
        .replace("expected a borrowed string", "expected a string")
}
