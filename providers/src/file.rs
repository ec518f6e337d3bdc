//! The `file` resource: a file's content, mode and ownership, written atomically.

use std::collections::BTreeMap;

use async_trait::async_trait;

use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{ContentDigest, Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, Declaration, Declared, MemberOutputs, Observation, ProbeOutput,
    Provider, ProviderError, Transport, UploadOptions, shell_quote,
};
use kz_engine::units::{format_mode, parse_mode};

/// Files larger than this are compared by digest instead of being read back whole.
const READ_LIMIT: u64 = 1024 * 1024;

#[derive(Debug)]
pub struct FileProvider;

/// A `[[file]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDecl {
    path: Spanned<String>,
    content: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
    owner: Option<Spanned<String>>,
    group: Option<Spanned<String>>,
    ensure: Option<Spanned<String>>,
}

/// A POSIX user or group name (letters, digits, `.`, `_`, `-`, not starting with `-`, not only
/// dots) or a number: anything else could be read as an option by `chown` (`--help` makes it
/// print its help and succeed), or as no owner at all (`.`), and the plan would never converge.
/// The `chown` calls end their options with `--` all the same.
pub(crate) fn valid_owner(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && !s.starts_with('-')
        && !s.chars().all(|c| c == '.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn declare_file(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: FileDecl = decl.parse()?;
    let mut attrs = vec![("path".to_string(), Template::Path(d.path.clone()))];
    let fixed = |v: Value| Template::Value(v);
    let absent = match &d.ensure {
        None => false,
        Some(e) => match e.get_ref().as_str() {
            "present" => false,
            "absent" => true,
            other => {
                decl.error(
                    e,
                    format!("invalid ensure `{other}`: expected \"present\" or \"absent\""),
                );
                return None;
            }
        },
    };
    // `present` is the default and stays implicit, so plans only mention `ensure` when it matters.
    if absent {
        attrs.push(("ensure".into(), fixed(Value::Text("absent".into()))));
    }
    match (&d.content, &d.source, absent) {
        (Some(_), Some(s), _) => {
            decl.error(s, "`content` and `source` are exclusive: give one of them");
            return None;
        }
        (Some(c), None, true) | (None, Some(c), true) => {
            decl.error(
                c,
                "a file with ensure = \"absent\" takes no `content` or `source`",
            );
            return None;
        }
        (None, None, false) => {
            let name = decl.name.to_string();
            decl.error_here(format!("file `{name}` needs `content` or `source`"));
            return None;
        }
        (Some(c), None, false) => attrs.push(("content".into(), Template::Text(c.clone()))),
        (None, Some(s), false) => {
            let bytes = decl.read_source(s)?;
            let v = match String::from_utf8(bytes) {
                Ok(t) => Value::Text(t),
                Err(e) => Value::Bytes(e.into_bytes()),
            };
            attrs.push(("content".into(), fixed(v)));
        }
        (None, None, true) => {}
    }
    if let Some(m) = &d.mode {
        match parse_mode(m.get_ref()) {
            Some(mode) if !absent => {
                attrs.push(("mode".into(), fixed(Value::Text(format_mode(mode)))));
            }
            Some(_) => {}
            None => {
                decl.error(
                    m,
                    format!(
                        "invalid mode `{}`: expected an octal string such as \"0644\"",
                        m.get_ref()
                    ),
                );
                return None;
            }
        }
    }
    for (name, v) in [("owner", &d.owner), ("group", &d.group)] {
        if let Some(v) = v {
            let s = v.get_ref();
            if !valid_owner(s) {
                decl.error(
                    v,
                    format!("invalid {name} `{s}`: expected a user or group name or number"),
                );
                return None;
            }
            if !absent {
                attrs.push((name.into(), fixed(Value::Text(s.clone()))));
            }
        }
    }
    Some(Declared { attrs, gate: None })
}

/// Cuts the output of `probe_batch` into what `probe` would have printed for each file: the class
/// lines (`d` directory, `p` regular file, `a` absent; `f` FIFO, `s` socket, `c` device, which
/// are never opened), one `stat` line per present file, one digest line per large file, then
/// the small files' contents back to back, cut by the sizes `stat` gave.
fn split_batch_read(count: usize, out: &ProbeOutput) -> Result<Vec<Vec<u8>>, String> {
    if out.status != 0 {
        return Err(format!("cannot read files (exit {})", out.status));
    }
    let mut rest: &[u8] = &out.stdout;
    let mut line = || -> Result<String, String> {
        let nl = rest
            .iter()
            .position(|b| *b == b'\n')
            .ok_or("the batched read was cut short")?;
        let l = String::from_utf8_lossy(&rest[..nl]).into_owned();
        rest = &rest[nl + 1..];
        Ok(l)
    };
    let classes: Vec<String> = (0..count).map(|_| line()).collect::<Result<_, _>>()?;
    let mut heads: Vec<Option<(String, u64)>> = Vec::with_capacity(count);
    for c in &classes {
        if c == "p" {
            let h = line()?;
            let size = h
                .split(' ')
                .nth(1)
                .and_then(|z| z.parse().ok())
                .ok_or_else(|| format!("unexpected answer `{h}`"))?;
            heads.push(Some((h, size)));
        } else {
            heads.push(None);
        }
    }
    let mut bodies: Vec<Vec<u8>> = vec![Vec::new(); count];
    for (n, h) in heads.iter().enumerate() {
        if matches!(h, Some((_, size)) if *size > READ_LIMIT) {
            bodies[n] = line()?.get(..64).unwrap_or_default().as_bytes().to_vec();
        }
    }
    for (n, h) in heads.iter().enumerate() {
        if let Some((_, size)) = h
            && *size <= READ_LIMIT
        {
            let size = usize::try_from(*size).map_err(|_| "size out of range".to_string())?;
            if rest.len() < size {
                return Err("a file changed while it was read".into());
            }
            bodies[n] = rest[..size].to_vec();
            rest = &rest[size..];
        }
    }
    if !rest.is_empty() {
        return Err("a file changed while it was read".into());
    }
    Ok(classes
        .iter()
        .zip(heads)
        .zip(bodies)
        .map(|((class, head), body)| {
            let mut stdout = match (class.as_str(), head) {
                ("d", _) => b"directory\n".to_vec(),
                ("f", _) => b"special fifo\n".to_vec(),
                ("s", _) => b"special socket\n".to_vec(),
                ("c", _) => b"special device\n".to_vec(),
                (_, Some((h, _))) => format!("present {h}\n").into_bytes(),
                _ => b"absent\n".to_vec(),
            };
            stdout.extend_from_slice(&body);
            stdout
        })
        .collect())
}

fn path(inst: &Instance) -> Result<&str, ProviderError> {
    inst.text("path")
        .ok_or_else(|| ProviderError::new("file", "no known `path`"))
}

fn wants_absent(inst: &Instance) -> bool {
    inst.text("ensure") == Some("absent")
}

fn upload_options(inst: &Instance, t: &dyn Transport) -> UploadOptions {
    UploadOptions {
        mode: inst.text("mode").and_then(parse_mode),
        owner: inst.text("owner").map(String::from),
        group: inst.text("group").map(String::from),
        timeout: t.command_timeout(),
        // The upload's script names the path and owner: it may show in the process list only
        // when none of them uses a secret.
        public: ["path", "owner", "group"]
            .iter()
            .all(|k| inst.attr(k).is_none_or(|a| !a.sensitive)),
    }
}

async fn run(t: &dyn Transport, step: &str, script: String) -> Result<(), ProviderError> {
    let out = t
        .run(CommandSpec {
            script,
            stdin: None,
            timeout: t.command_timeout(),
            ..Default::default()
        })
        .await
        .map_err(|e| ProviderError::transport(step, e))?;
    if out.status == 0 {
        Ok(())
    } else {
        Err(ProviderError::new(
            step,
            format!(
                "exit status {}: {}",
                out.status,
                crate::tail(&out.stderr, 5)
            ),
        ))
    }
}

impl FileProvider {
    async fn write(&self, inst: &Instance, t: &dyn Transport) -> Result<(), ProviderError> {
        let p = path(inst)?;
        if wants_absent(inst) {
            return run(t, "remove", format!("rm -f -- {}", shell_quote(p))).await;
        }
        let content = inst
            .attr("content")
            .and_then(|a| a.known())
            .and_then(Value::as_bytes)
            .ok_or_else(|| {
                ProviderError::new("upload", "content is not known (is a secret unset?)")
            })?;
        t.upload(p, content.to_vec(), &upload_options(inst, t))
            .await
            .map_err(|e| ProviderError::transport("upload", e))
    }
}

#[async_trait]
impl Provider for FileProvider {
    fn kind(&self) -> &'static str {
        "file"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare_file(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        let p = shell_quote(inst.text("path")?);
        Some(format!(
            "p={p}\nif [ -d \"$p\" ]; then echo directory\nelif [ -f \"$p\" ]; then \
             s=$(stat -L -c '%a %s %u %g %U %G' -- \"$p\") || exit 1\necho \"present $s\"\n\
             set -- $s\nif [ \"$2\" -le {READ_LIMIT} ]; then cat -- \"$p\"; \
             else sha256sum -- \"$p\" | cut -d' ' -f1; fi\n\
             elif [ -p \"$p\" ]; then echo special fifo\n\
             elif [ -S \"$p\" ]; then echo special socket\n\
             elif [ -e \"$p\" ]; then echo special device\nelse echo absent; fi"
        ))
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        observe_file(inst, out)
    }

    fn probe_batch(&self, insts: &[&Instance]) -> Option<String> {
        // Shell builtins sort the paths; then one `stat` for every present file, `sha256sum` for
        // each large one, and one `cat` for all the small ones: a handful of processes for the
        // whole host instead of several per file.
        let mut s = String::from("set --\n");
        for inst in insts {
            let p = shell_quote(inst.text("path")?);
            s.push_str(&format!(
                "if [ -d {p} ]; then echo d; elif [ -f {p} ]; then echo p; set -- \"$@\" {p}; \
                 elif [ -p {p} ]; then echo f; elif [ -S {p} ]; then echo s; \
                 elif [ -e {p} ]; then echo c; else echo a; fi\n"
            ));
        }
        s.push_str(&format!(
            "[ $# -eq 0 ] && exit 0\n\
             st=$(stat -L -c '%a %s %u %g %U %G' -- \"$@\") || exit 1\n\
             printf '%s\\n' \"$st\"\n\
             exec 3<<KZEOF\n$st\nKZEOF\n\
             n=$#; i=0\n\
             while [ \"$i\" -lt \"$n\" ]; do\n\
             f=$1; shift; i=$((i+1)); read -r m z u g un gn <&3\n\
             if [ \"$z\" -le {READ_LIMIT} ]; then set -- \"$@\" \"$f\"; else sha256sum < \"$f\" || exit 1; fi\n\
             done\n\
             [ $# -eq 0 ] || cat -- \"$@\" || exit 1\n"
        ));
        Some(s)
    }

    fn observe_batch(
        &self,
        insts: &[&Instance],
        out: &ProbeOutput,
    ) -> Vec<Result<Observation, String>> {
        match split_batch_read(insts.len(), out) {
            Ok(parts) => insts
                .iter()
                .zip(parts)
                .map(|(inst, stdout)| observe_file(inst, &ProbeOutput { stdout, status: 0 }))
                .collect(),
            Err(e) => insts.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn force_new(&self) -> &'static [&'static str] {
        &["path"]
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let t = cx.own_transport().await?;
        self.write(cx.instance(), &*t).await?;
        Ok(Applied::default())
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let t = cx.own_transport().await?;
        let t = &*t;
        if wants_absent(inst) || cx.changed().iter().any(|c| c == "content" || c == "ensure") {
            self.write(inst, t).await?;
            return Ok(Applied::default());
        }
        // Only metadata differs: fix it without rewriting the content.
        let p = shell_quote(path(inst)?);
        let mut script = String::from("set -e\n");
        if let Some(mode) = inst.text("mode") {
            script.push_str(&format!("chmod -- {} {p}\n", shell_quote(mode)));
        }
        let owner = inst.text("owner").unwrap_or("");
        let group = inst.text("group").unwrap_or("");
        if !owner.is_empty() || !group.is_empty() {
            let spec = format!("{owner}:{group}");
            script.push_str(&format!(
                "chown -- {} {p}\n",
                shell_quote(spec.trim_end_matches(':'))
            ));
        }
        run(t, "update", script).await?;
        Ok(Applied::default())
    }

    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        if wants_absent(inst) {
            return Ok(Applied::default());
        }
        let t = cx.own_transport().await?;
        let t = &*t;
        run(
            t,
            "delete",
            format!("rm -f -- {}", shell_quote(path(inst)?)),
        )
        .await?;
        Ok(Applied::default())
    }
}

/// What `probe` printed for one file, as an observation.
fn observe_file(inst: &Instance, out: &ProbeOutput) -> Result<Observation, String> {
    if out.status != 0 {
        return Err(format!("cannot read file (exit {})", out.status));
    }
    let nl = out
        .stdout
        .iter()
        .position(|b| *b == b'\n')
        .unwrap_or(out.stdout.len());
    let head = String::from_utf8_lossy(&out.stdout[..nl]).to_string();
    let body = out.stdout.get(nl + 1..).unwrap_or_default();
    let mut fields = head.split(' ');
    let mut attrs = BTreeMap::new();
    let present = match fields.next() {
        Some("absent") => false,
        Some("present") => true,
        Some("directory") => return Err("the path is a directory".into()),
        // Never opened: a FIFO would block the read, a device like /dev/zero never end it.
        Some("special") => {
            let kind = match fields.next() {
                Some("fifo") => "a FIFO",
                Some("socket") => "a socket",
                _ => "a device",
            };
            return Err(format!("the path is {kind}: kz manages regular files"));
        }
        _ => return Err(format!("unexpected answer `{head}`")),
    };
    if wants_absent(inst) {
        let state = if present { "present" } else { "absent" };
        attrs.insert("ensure".into(), Value::Text(state.into()));
        return Ok(Observation {
            exists: true,
            attrs,
            note: None,
            ..Default::default()
        });
    }
    if !present {
        return Ok(Observation {
            exists: false,
            attrs,
            note: Some("file absent".into()),
            ..Default::default()
        });
    }
    let f: Vec<&str> = fields.collect();
    let [mode, size, uid, gid, user, group] = f.as_slice() else {
        return Err(format!("unexpected answer `{head}`"));
    };
    // A numeric owner or group in the stack compares with the id, a name with the name.
    let numeric = |attr: &str| {
        inst.text(attr)
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit()))
    };
    let owner = if numeric("owner") { uid } else { user };
    let group = if numeric("group") { gid } else { group };
    let mode = u32::from_str_radix(mode, 8).map_err(|_| format!("bad mode `{mode}`"))?;
    let size: u64 = size.parse().map_err(|_| format!("bad size `{size}`"))?;
    let content = if size <= READ_LIMIT {
        match String::from_utf8(body.to_vec()) {
            Ok(t) => Value::Text(t),
            Err(e) => Value::Bytes(e.into_bytes()),
        }
    } else {
        Value::Digest(ContentDigest {
            sha256: String::from_utf8_lossy(body).trim().to_string(),
            size,
        })
    };
    attrs.insert("content".into(), content);
    attrs.insert("mode".into(), Value::Text(format!("{mode:04o}")));
    attrs.insert("owner".into(), Value::Text((*owner).to_string()));
    attrs.insert("group".into(), Value::Text((*group).to_string()));
    Ok(Observation {
        exists: true,
        attrs,
        note: None,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::valid_owner;

    #[test]
    fn owners_are_names_or_numbers_never_options() {
        for ok in ["root", "www-data", "_apt", "1000", "a.b"] {
            assert!(valid_owner(ok), "{ok}");
        }
        for bad in [
            "",
            "--help",
            "-1",
            ".",
            "..",
            "a:b",
            "a b",
            "$(x)",
            &"a".repeat(33),
        ] {
            assert!(!valid_owner(bad), "{bad}");
        }
    }
}
