//! Hosts read from an inventory file: `[inventory] file = "servers.tsv"` in stack.toml names a
//! TSV or CSV file with a header line, and says which columns hold each host's name, address and
//! labels. Operators keep their fleet in such a file (KeyBuzz's 52 servers), so hosts join a stack
//! without editing TOML. Every bad line is an error naming `file:line`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use sha2::Digest;
use toml::Spanned;

use super::{Loader, loc, raw};
use crate::diag::{Diagnostic, Location, SourceFile};

/// One host of the file, with where its line is (for errors naming it).
pub(super) struct FileHost {
    pub name: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub span: Range<usize>,
}

/// The inventory file, read: its source (for locations) and its hosts, in file order.
pub(super) struct InventoryFile {
    pub source: Arc<SourceFile>,
    pub hosts: Vec<FileHost>,
}

/// One line of the file: its number, its byte range, its trimmed fields.
type Row = (usize, Range<usize>, Vec<String>);

/// Which column holds what, by header name.
struct Columns {
    name: usize,
    address: usize,
    labels: Vec<(String, usize)>,
}

impl Loader<'_> {
    /// Reads `[inventory]`'s file; `None` after an error (reported).
    pub(super) fn inventory_file(
        &mut self,
        src: &Arc<SourceFile>,
        table: &Spanned<raw::InventoryTable>,
    ) -> Option<InventoryFile> {
        let inv = table.get_ref();
        let rel = inv.file.get_ref();
        let shown = super::display_path(&self.dir, rel);
        let bytes = match super::declare::read_confined(&self.dir, rel) {
            Ok(b) => b,
            Err(e) => {
                self.error(Diagnostic::at(
                    loc(src, &inv.file),
                    format!("cannot read inventory file `{}`: {e}", shown.display()),
                ));
                return None;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            self.error(Diagnostic::at(
                loc(src, &inv.file),
                format!("inventory file `{}` is not UTF-8 text", shown.display()),
            ));
            return None;
        };
        self.digest.update(text.as_bytes());
        let delimiter = self.delimiter(src, inv)?;
        let source = SourceFile::new(shown, text);
        let rows = self.rows(&source, delimiter)?;
        let mut rows = rows.into_iter();
        let Some((_, _, header)) = rows.next() else {
            self.error(Diagnostic::at(
                loc(src, &inv.file),
                format!(
                    "inventory file `{}` has no header line",
                    source.display.display()
                ),
            ));
            return None;
        };
        let columns = self.columns(src, inv, &source, &header)?;
        let hosts = self.file_hosts(&source, &header, &columns, rows);
        Some(InventoryFile { source, hosts })
    }

    /// Tab for `.tsv`, comma for `.csv`, or as `format` says.
    fn delimiter(&mut self, src: &Arc<SourceFile>, inv: &raw::InventoryTable) -> Option<u8> {
        let (format, at) = match &inv.format {
            Some(f) => (f.get_ref().to_ascii_lowercase(), f.span()),
            None => {
                let ext = inv.file.get_ref().rsplit_once('.').map(|(_, e)| e);
                (ext.unwrap_or("").to_ascii_lowercase(), inv.file.span())
            }
        };
        match format.as_str() {
            "tsv" => Some(b'\t'),
            "csv" => Some(b','),
            _ => {
                let message = if inv.format.is_some() {
                    format!("unknown inventory format `{format}`: expected \"tsv\" or \"csv\"")
                } else {
                    "cannot tell the inventory file's format: name it `.tsv` or `.csv`, or set `format = \"tsv\"` or `\"csv\"`".to_string()
                };
                self.error(Diagnostic::at(Location::new(src, at), message));
                None
            }
        }
    }

    /// Every line that is not blank and not a `#` comment, cut into trimmed fields, with its line
    /// number and byte range; a line the reader cannot cut (an unclosed quote) is an error.
    fn rows(&mut self, source: &Arc<SourceFile>, delimiter: u8) -> Option<Vec<Row>> {
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .comment(Some(b'#'))
            // TSV has no quoting: a `"` in a cell is a character like any other.
            .quoting(delimiter == b',')
            .from_reader(source.text.as_bytes());
        let mut rows = Vec::new();
        for record in reader.records() {
            match record {
                Ok(r) => {
                    let fields: Vec<String> = r.iter().map(|f| f.trim().to_string()).collect();
                    if fields.iter().all(String::is_empty) {
                        continue;
                    }
                    let start = r.position().map_or(0, |p| p.byte() as usize);
                    let line = r.position().map_or(0, |p| p.line() as usize);
                    let end = source.text[start..]
                        .find('\n')
                        .map_or(source.text.len(), |i| start + i);
                    rows.push((line, start..end, fields));
                }
                Err(e) => {
                    let at = e.position().map_or(0, |p| p.byte() as usize);
                    self.error(Diagnostic::at(
                        Location::new(source, at..at),
                        format!("cannot read this line: {e}"),
                    ));
                    return None;
                }
            }
        }
        Some(rows)
    }

    /// Finds the named columns in the header; a missing one is an error in stack.toml.
    fn columns(
        &mut self,
        src: &Arc<SourceFile>,
        inv: &raw::InventoryTable,
        source: &SourceFile,
        header: &[String],
    ) -> Option<Columns> {
        let before = self.diags.0.len();
        let find = |this: &mut Self, wanted: &str, at: Range<usize>| {
            let found = header.iter().position(|h| h == wanted);
            if found.is_none() {
                this.error(Diagnostic::at(
                    Location::new(src, at),
                    format!(
                        "column `{wanted}` is not in the header of `{}` (its columns: {})",
                        source.display.display(),
                        header.join(", ")
                    ),
                ));
            }
            found.unwrap_or(0)
        };
        let span_of =
            |s: &Option<Spanned<String>>| s.as_ref().map_or(inv.file.span(), Spanned::span);
        let name_col = inv.name.as_ref().map_or("name", |s| s.get_ref().as_str());
        let address_col = inv
            .address
            .as_ref()
            .map_or("address", |s| s.get_ref().as_str());
        let name = find(self, name_col, span_of(&inv.name));
        let address = find(self, address_col, span_of(&inv.address));
        let mut labels = Vec::new();
        for (label, column) in &inv.labels {
            let i = find(self, column.get_ref(), column.span());
            labels.push((label.clone(), i));
        }
        (self.diags.0.len() == before).then_some(Columns {
            name,
            address,
            labels,
        })
    }

    /// The hosts of the rows after the header: one per line, each line checked.
    fn file_hosts(
        &mut self,
        source: &Arc<SourceFile>,
        header: &[String],
        columns: &Columns,
        rows: impl Iterator<Item = Row>,
    ) -> Vec<FileHost> {
        let mut hosts: Vec<FileHost> = Vec::new();
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (line, span, fields) in rows {
            let at = Location::new(source, span.clone());
            if fields.len() != header.len() {
                self.error(Diagnostic::at(
                    at,
                    format!(
                        "expected {} fields ({}), found {}",
                        header.len(),
                        header.join(", "),
                        fields.len()
                    ),
                ));
                continue;
            }
            let name = fields[columns.name].clone();
            let address = fields[columns.address].clone();
            let problem = if name.is_empty() {
                Some("the host name is empty".to_string())
            } else if !super::inventory::valid_host_name(&name) {
                Some(format!(
                    "invalid host name `{name}`: use letters, digits, `-`, `_` and `.`"
                ))
            } else if address.is_empty() || address.contains(char::is_whitespace) {
                Some(format!("host `{name}` has no valid address (`{address}`)"))
            } else {
                seen.get(&name)
                    .map(|first| format!("host `{name}` is listed twice (first on line {first})"))
            };
            if let Some(p) = problem {
                self.error(Diagnostic::at(at, p));
                continue;
            }
            let labels = columns
                .labels
                .iter()
                .filter(|(_, i)| !fields[*i].is_empty())
                .map(|(l, i)| (l.clone(), fields[*i].clone()))
                .collect();
            seen.insert(name.clone(), line);
            hosts.push(FileHost {
                name,
                address,
                labels,
                span,
            });
        }
        hosts
    }
}
