//! The `image` resource: an image built on the host from a build context directory of the stack.
//! The context is read at load time into one deterministic tar (`tar.rs`), sent in one upload
//! (on the build command's standard input) and built with the host's runtime, tagged as
//! declared and labelled `io.kz.context=SHA256-SIZE`, the digest of that tar: the plan compares
//! the label with the context, so it is rebuilt exactly when the context changes.

mod tar;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use toml::Spanned;

use kz_engine::load::declare::Template;
use kz_engine::model::{ContentDigest, Instance, Value};
use kz_engine::provider::{
    Applied, ApplyCtx, CommandSpec, Declaration, Declared, MemberOutputs, Observation, ProbeOutput,
    Provider, ProviderError, shell_quote,
};
use kz_engine::units::{duration, format_duration, parse_duration};

use crate::container::{RUNTIMES, runtime_setting};

#[derive(Debug)]
pub struct ImageProvider;

/// The largest build context kz sends.
const CONTEXT_LIMIT: usize = 256 << 20;

/// How long a build may take when `build_timeout` is not set.
const DEFAULT_BUILD_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// An `[[image]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImageDecl {
    tag: Spanned<String>,
    context: Spanned<String>,
    file: Option<Spanned<String>>,
    runtime: Option<Spanned<String>>,
    build_timeout: Option<Spanned<String>>,
}

/// Every regular file under `dir` (relative paths, `/`-separated), links followed only when
/// they stay inside `root`.
fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), String> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    names.sort();
    for p in names {
        let real = p
            .canonicalize()
            .map_err(|e| format!("{}: {e}", p.display()))?;
        if !real.starts_with(root) {
            return Err(format!("{} lies outside the stack directory", p.display()));
        }
        let rel = p.strip_prefix(root).map_err(|e| e.to_string())?;
        if real.is_dir() {
            walk(root, &p, out)?;
        } else if real.is_file() {
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// The build context as a tar: every file read through the declaration (confined to the stack
/// directory and folded into the stack's digest).
fn read_context(decl: &mut Declaration<'_>, ctx: &Spanned<String>) -> Option<Vec<u8>> {
    let root = match decl.stack_dir().canonicalize() {
        Ok(r) => r,
        Err(e) => {
            decl.error(ctx, format!("cannot resolve the stack directory: {e}"));
            return None;
        }
    };
    let dir = root.join(ctx.get_ref());
    let listing = match dir.canonicalize() {
        Ok(d) if !d.starts_with(&root) => Err("it lies outside the stack directory".to_string()),
        Ok(d) if !d.is_dir() => Err("not a directory".to_string()),
        Ok(d) => {
            let mut files = Vec::new();
            walk(&root, &d, &mut files).map(|()| (d, files))
        }
        Err(e) => Err(e.to_string()),
    };
    let (real, files) = match listing {
        Ok(l) => l,
        Err(e) => {
            decl.error(ctx, format!("cannot read context `{}`: {e}", ctx.get_ref()));
            return None;
        }
    };
    let prefix = real.strip_prefix(&root).ok()?.to_path_buf();
    let mut entries = Vec::new();
    for rel in files {
        let bytes = decl.read_source(&Spanned::new(ctx.span(), rel.clone()))?;
        let executable = std::fs::metadata(root.join(&rel))
            .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0);
        let path = Path::new(&rel)
            .strip_prefix(&prefix)
            .map_or(rel.clone(), |p| p.to_string_lossy().into_owned());
        entries.push(tar::Entry {
            path,
            executable,
            bytes,
        });
    }
    match tar::archive(entries) {
        Ok(t) if t.len() > CONTEXT_LIMIT => {
            decl.error(
                ctx,
                format!(
                    "the context is {} bytes, over the limit of {CONTEXT_LIMIT}",
                    t.len()
                ),
            );
            None
        }
        Ok(t) => Some(t),
        Err(e) => {
            decl.error(ctx, e);
            None
        }
    }
}

fn declare_image(decl: &mut Declaration<'_>) -> Option<Declared> {
    let d: ImageDecl = decl.parse()?;
    let tag = d.tag.get_ref();
    if tag.is_empty()
        || tag.starts_with('-')
        || tag.contains("${")
        || tag.chars().any(char::is_whitespace)
    {
        decl.error(
            &d.tag,
            format!("invalid tag `{tag}`: expected a name such as \"localhost/app:1\""),
        );
    }
    if let Some(r) = &d.runtime
        && !RUNTIMES.contains(&r.get_ref().as_str())
    {
        decl.error(
            r,
            format!(
                "invalid runtime `{}`: expected \"podman\" or \"docker\"",
                r.get_ref()
            ),
        );
    }
    let context = read_context(decl, &d.context)?;
    let file = d.file.as_ref().map_or_else(
        || {
            let has = |n: &str| decl.stack_dir().join(d.context.get_ref()).join(n).is_file();
            if has("Containerfile") || !has("Dockerfile") {
                "Containerfile"
            } else {
                "Dockerfile"
            }
            .to_string()
        },
        |f| f.get_ref().clone(),
    );
    if file.starts_with('/') || file.split('/').any(|p| p == "..") {
        let at = d.file.as_ref().unwrap_or(&d.context);
        decl.error(
            at,
            format!("invalid file `{file}`: expected a path inside the context"),
        );
    }
    let mut attrs = vec![
        ("tag".to_string(), Template::Value(Value::Text(tag.clone()))),
        (
            "runtime".into(),
            // The host setting is declared once, by the container provider.
            d.runtime.as_ref().map_or_else(runtime_setting, |r| {
                Template::Value(Value::Text(r.get_ref().clone()))
            }),
        ),
        ("context".into(), Template::Value(Value::Bytes(context))),
        ("file".into(), Template::Value(Value::Text(file))),
    ];
    if let Some(t) = &d.build_timeout {
        match duration(t.get_ref()) {
            Ok(v) if !v.is_zero() => attrs.push((
                "build_timeout".into(),
                Template::Value(Value::Text(format_duration(v))),
            )),
            Ok(_) => decl.error(t, "expected a duration longer than 0s"),
            Err(e) => decl.error(t, e.to_string()),
        }
    }
    decl.ok().then_some(Declared { attrs, gate: None })
}

fn runtime(inst: &Instance) -> &'static str {
    match inst.text("runtime") {
        Some("docker") => "docker",
        _ => "podman",
    }
}

fn tag(inst: &Instance) -> Result<&str, ProviderError> {
    inst.text("tag")
        .ok_or_else(|| ProviderError::new("image", "no known `tag`"))
}

/// The label value of a context: its digest and size.
fn context_label(bytes: &[u8]) -> String {
    let d = ContentDigest::of(bytes);
    format!("{}-{}", d.sha256, d.size)
}

async fn build(cx: &ApplyCtx) -> Result<Applied, ProviderError> {
    let inst = cx.instance();
    crate::container::check_runtime(inst).map_err(|e| ProviderError::new("runtime", e))?;
    let rt = shell_quote(runtime(inst));
    let context = inst
        .attr("context")
        .and_then(|a| a.known())
        .and_then(Value::as_bytes)
        .ok_or_else(|| ProviderError::new("build", "the context is not known"))?
        .to_vec();
    let file = inst.text("file").unwrap_or("Containerfile");
    let timeout = inst
        .text("build_timeout")
        .and_then(parse_duration)
        .unwrap_or(DEFAULT_BUILD_TIMEOUT);
    let script = format!(
        "command -v {rt} >/dev/null 2>&1 || {{ echo \"runtime \"{rt}\" not found on the host\" >&2; exit 127; }}\n\
         d=$(mktemp -d) || exit 1\ntrap 'rm -rf \"$d\"' EXIT\ntrap 'exit 130' INT TERM HUP\n\
         tar -xf - -C \"$d\" || exit 1\n\
         {rt} build -q -t {tag} --label {label} -f \"$d\"/{file} \"$d\" >/dev/null || exit 1\n\
         {rt} image inspect --format '{{{{.Id}}}}' -- {tag}\n",
        tag = shell_quote(tag(inst)?),
        label = shell_quote(&format!("io.kz.context={}", context_label(&context))),
        file = shell_quote(file),
    );
    let t = cx.own_transport().await?;
    cx.progress(format!(
        "building image {} ({} KiB of context)",
        tag(inst)?,
        context.len() >> 10
    ));
    let out = t
        .run(CommandSpec {
            script,
            stdin: Some(context),
            timeout,
            public_script: true,
        })
        .await
        .map_err(|e| ProviderError::transport("build", e))?;
    if out.status != 0 {
        return Err(ProviderError::new(
            "build",
            format!(
                "exit status {}: {}",
                out.status,
                crate::tail(&out.stderr, 15)
            ),
        ));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let mut outputs = BTreeMap::new();
    outputs.insert(
        "image_id".to_string(),
        Value::Text(id.strip_prefix("sha256:").unwrap_or(&id).to_string()),
    );
    Ok(Applied {
        outputs,
        note: None,
    })
}

/// One line per image: `TAG LABEL`, `TAG -` when absent, or `TAG !` when the runtime is missing.
fn probe_line(inst: &Instance) -> Option<String> {
    let rt = shell_quote(runtime(inst));
    let t = shell_quote(inst.text("tag")?);
    Some(format!(
        "if ! command -v {rt} >/dev/null 2>&1; then echo '!'; \
         else l=$({rt} image inspect --format '{{{{index .Config.Labels \"io.kz.context\"}}}}' -- {t} 2>/dev/null) \
         && echo \"+$l\" || echo -; fi\n"
    ))
}

fn observe_line(inst: &Instance, line: &str) -> Result<Observation, String> {
    crate::container::check_runtime(inst)?;
    let mut obs = Observation::default();
    match line.trim() {
        "!" => obs.note = Some(format!("runtime {} not found on host", runtime(inst))),
        "-" | "" => {}
        l => {
            obs.exists = true;
            let label = l.trim_start_matches('+');
            let digest = label.rsplit_once('-').and_then(|(sha, size)| {
                Some(ContentDigest {
                    sha256: sha.to_string(),
                    size: size.parse().ok()?,
                })
            });
            // A label kz did not write (or none) compares as no context at all: rebuilt.
            let v = digest.map_or_else(|| Value::Text("(built outside kz)".into()), Value::Digest);
            obs.attrs.insert("context".into(), v);
        }
    }
    Ok(obs)
}

#[async_trait]
impl Provider for ImageProvider {
    fn kind(&self) -> &'static str {
        "image"
    }

    fn declare(&self, decl: &mut Declaration<'_>) -> Option<Declared> {
        declare_image(decl)
    }

    fn probe(&self, inst: &Instance, _host: &str) -> Option<String> {
        probe_line(inst)
    }

    fn observe(&self, inst: &Instance, out: &MemberOutputs) -> Result<Observation, String> {
        let out = out.first().ok_or("no output")?;
        observe_line(inst, &String::from_utf8_lossy(&out.stdout))
    }

    fn probe_batch(&self, insts: &[&Instance]) -> Option<String> {
        insts.iter().map(|i| probe_line(i)).collect()
    }

    fn observe_batch(
        &self,
        insts: &[&Instance],
        out: &ProbeOutput,
    ) -> Vec<Result<Observation, String>> {
        let text = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = text.lines().collect();
        if out.status != 0 || lines.len() != insts.len() {
            let e = format!("cannot read images (exit {})", out.status);
            return insts.iter().map(|_| Err(e.clone())).collect();
        }
        insts
            .iter()
            .zip(lines)
            .map(|(i, l)| observe_line(i, l))
            .collect()
    }

    fn force_new(&self) -> &'static [&'static str] {
        &["tag", "runtime"]
    }

    async fn create(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        build(cx).await
    }

    async fn update(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        // `build_timeout` is kz's own setting: a new one alone rebuilds nothing.
        if cx.changed().iter().all(|c| c == "build_timeout") {
            return Ok(Applied::default());
        }
        build(cx).await
    }

    /// Removes the tag; containers still using the image keep it until they go.
    async fn delete(&self, cx: &ApplyCtx) -> Result<Applied, ProviderError> {
        let inst = cx.instance();
        let rt = shell_quote(runtime(inst));
        let t = shell_quote(tag(inst)?);
        let script = format!(
            "command -v {rt} >/dev/null 2>&1 || exit 0\n\
             {rt} image inspect -- {t} >/dev/null 2>&1 || exit 0\n{rt} rmi -- {t} >/dev/null\n"
        );
        let tr = cx.own_transport().await?;
        let out = tr
            .run(CommandSpec {
                script,
                stdin: None,
                timeout: tr.command_timeout(),
                public_script: false,
            })
            .await
            .map_err(|e| ProviderError::transport("remove", e))?;
        if out.status != 0 {
            return Err(ProviderError::new(
                "remove",
                format!(
                    "exit status {}: {}",
                    out.status,
                    crate::tail(&out.stderr, 5)
                ),
            ));
        }
        Ok(Applied::default())
    }
}
