//! Diagnostics for bad input: every error about a stack names `file:line:col` and shows the line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A file of a stack, kept in memory so errors can quote it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user should read it (relative to where kz was started when possible).
    pub display: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    pub fn new(display: PathBuf, text: String) -> Arc<SourceFile> {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Arc::new(SourceFile {
            display,
            text,
            line_starts,
        })
    }

    /// One-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(1, |s| s.chars().count() + 1);
        (line + 1, col)
    }

    fn line_text(&self, line: usize) -> &str {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |e| e.saturating_sub(1));
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// A place in a stack file.
#[derive(Debug, Clone)]
pub struct Location {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl Location {
    pub fn new(file: &Arc<SourceFile>, span: Range<usize>) -> Location {
        Location {
            file: Arc::clone(file),
            span,
        }
    }

    pub fn line_col(&self) -> (usize, usize) {
        self.file.line_col(self.span.start)
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.line_col();
        write!(f, "{}:{}:{}", self.file.display.display(), line, col)
    }
}

/// One error about the user's input, with where it is when that is known.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    pub message: String,
    pub location: Option<Location>,
    /// Extra lines shown after the snippet, e.g. the path of a dependency cycle.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            location: None,
            notes: Vec::new(),
        }
    }

    pub fn at(location: Location, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            location: Some(location),
            notes: Vec::new(),
        }
    }

    pub fn in_file(path: &Path, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(format!("{}: {}", path.display(), message.into()))
    }

    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            None => write!(f, "{}", self.message)?,
            Some(loc) => {
                let (line, col) = loc.line_col();
                write!(f, "{loc}: {}", self.message)?;
                let text = loc.file.line_text(line);
                let gutter = line.to_string().len();
                let width = loc
                    .file
                    .text
                    .get(loc.span.clone())
                    .map_or(1, |s| s.lines().next().unwrap_or("").chars().count())
                    .max(1);
                let width = width.min(text.chars().count().saturating_sub(col - 1).max(1));
                write!(
                    f,
                    "\n{:gutter$} |\n{line} | {text}\n{:gutter$} | {}{}",
                    "",
                    "",
                    " ".repeat(col - 1),
                    "^".repeat(width)
                )?;
            }
        }
        for note in &self.notes {
            write!(f, "\n  = {note}")?;
        }
        Ok(())
    }
}

/// Every problem found while loading a stack; loading reports as many as it can at once.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}
