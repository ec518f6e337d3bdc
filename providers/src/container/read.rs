//! Reading the containers of a host: one snippet for all of them (per runtime used there), one
//! `ps` for the names, one `inspect` of the declared ones that exist, one `image inspect` per
//! declared image; then each container's observation from that JSON.

use std::collections::BTreeMap;

use serde_json::Value as Json;

use kz_engine::model::{Instance, Value};
use kz_engine::provider::{Observation, ProbeOutput, shell_quote};

use super::fields::{field, spec_hash};
use super::{CREATE_ONLY, container_name, runtime_of};

/// The section markers of the batched read, on lines of their own.
const RUNTIME: &str = "==kz:runtime ";
const ABSENT: &str = "==kz:absent";
const FAILED: &str = "==kz:failed";
const INSPECT: &str = "==kz:inspect";
const IMAGES: &str = "==kz:images";

/// The snippet reading every container of `insts` (all on one host).
pub(super) fn probe_batch(insts: &[&Instance]) -> String {
    let mut by_runtime: BTreeMap<&str, Vec<&Instance>> = BTreeMap::new();
    for inst in insts {
        by_runtime.entry(runtime_of(inst)).or_default().push(inst);
    }
    let mut s = String::new();
    for (rt, insts) in by_runtime {
        let names: Vec<String> = insts
            .iter()
            .map(|i| shell_quote(container_name(i)))
            .collect();
        let mut images: Vec<String> = insts
            .iter()
            .filter_map(|i| i.text("image"))
            .map(shell_quote)
            .collect();
        images.sort();
        images.dedup();
        let q = shell_quote(rt);
        s.push_str(&format!(
            "echo {marker}\n\
             if ! command -v {q} >/dev/null 2>&1; then echo {ABSENT}\n\
             elif ! kz_names=$({q} ps -a --format '{{{{.Names}}}}' 2>&1); then echo {FAILED}; \
             printf '%s\\n' \"$kz_names\" | tail -n 3\n\
             else set --\n\
             for n in {names}; do if printf '%s\\n' \"$kz_names\" | grep -qxF -- \"$n\"; then \
             set -- \"$@\" \"$n\"; fi; done\n\
             echo {INSPECT}\n\
             if [ $# -gt 0 ]; then kz_i=$({q} container inspect -- \"$@\" 2>/dev/null); \
             if [ -n \"$kz_i\" ]; then printf '%s\\n' \"$kz_i\"; else echo '[]'; fi; fi\n\
             echo {IMAGES}\n\
             for i in {images}; do printf '%s ' \"$i\"; \
             {q} image inspect --format '{{{{.Id}}}}' -- \"$i\" 2>/dev/null || echo; done\n\
             fi\n",
            marker = shell_quote(&format!("{RUNTIME}{rt}")),
            names = names.join(" "),
            images = if images.is_empty() {
                "''".to_string()
            } else {
                images.join(" ")
            },
        ));
    }
    s
}

/// What one runtime said on a host.
#[derive(Debug, Default)]
struct RuntimeRead {
    absent: bool,
    failed: Option<String>,
    containers: Vec<Json>,
    /// Image reference -> its id on the host (empty when the host lacks it).
    images: BTreeMap<String, String>,
}

/// Cuts the batched read into each runtime's answer.
fn parse_sections(text: &str) -> Result<BTreeMap<String, RuntimeRead>, String> {
    let mut out: BTreeMap<String, RuntimeRead> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut section = "";
    let mut json = String::new();
    let mut failed = Vec::new();
    let finish =
        |rt: &Option<String>, out: &mut BTreeMap<String, RuntimeRead>, json: &mut String| {
            if let Some(rt) = rt
                && !json.trim().is_empty()
            {
                let list: Vec<Json> = serde_json::from_str(json.trim())
                    .map_err(|e| format!("cannot parse `{rt} inspect`: {e}"))?;
                out.entry(rt.clone()).or_default().containers.extend(list);
            }
            json.clear();
            Ok::<(), String>(())
        };
    for line in text.lines() {
        if let Some(rt) = line.strip_prefix(RUNTIME) {
            finish(&current, &mut out, &mut json)?;
            current = Some(rt.to_string());
            out.entry(rt.to_string()).or_default();
            section = "";
            continue;
        }
        let Some(rt) = current.clone() else {
            return Err(format!("unexpected answer `{line}`"));
        };
        let entry = out.entry(rt.clone()).or_default();
        match line {
            ABSENT => entry.absent = true,
            FAILED | INSPECT | IMAGES => {
                if section == INSPECT {
                    finish(&current, &mut out, &mut json)?;
                }
                section = match line {
                    FAILED => FAILED,
                    INSPECT => INSPECT,
                    _ => IMAGES,
                };
            }
            _ if section == INSPECT => {
                json.push_str(line);
                json.push('\n');
            }
            _ if section == IMAGES => {
                let (image, id) = line.split_once(' ').unwrap_or((line, ""));
                entry
                    .images
                    .insert(image.to_string(), strip_digest(id.trim()));
            }
            _ if section == FAILED => failed.push((rt, line.to_string())),
            _ => return Err(format!("unexpected answer `{line}`")),
        }
    }
    finish(&current, &mut out, &mut json)?;
    for (rt, line) in failed {
        let e = out.entry(rt).or_default();
        let msg = e.failed.get_or_insert_with(String::new);
        if !msg.is_empty() {
            msg.push_str(" / ");
        }
        msg.push_str(&line);
    }
    Ok(out)
}

/// An image id without its `sha256:` prefix (docker writes it, podman does not).
pub(super) fn strip_digest(id: &str) -> String {
    id.strip_prefix("sha256:").unwrap_or(id).to_string()
}

/// The observations of `probe_batch`'s containers, in order.
pub(super) fn observe_batch(
    insts: &[&Instance],
    out: &ProbeOutput,
) -> Vec<Result<Observation, String>> {
    if out.status != 0 {
        let e = format!("cannot read containers (exit {})", out.status);
        return insts.iter().map(|_| Err(e.clone())).collect();
    }
    match parse_sections(&String::from_utf8_lossy(&out.stdout)) {
        Ok(reads) => insts.iter().map(|i| observe_one(i, &reads)).collect(),
        Err(e) => insts.iter().map(|_| Err(e.clone())).collect(),
    }
}

fn observe_one(
    inst: &Instance,
    reads: &BTreeMap<String, RuntimeRead>,
) -> Result<Observation, String> {
    super::check_runtime(inst)?;
    let rt = runtime_of(inst);
    let read = reads
        .get(rt)
        .ok_or_else(|| format!("no answer from runtime {rt}"))?;
    if read.absent {
        return Ok(Observation {
            exists: false,
            attrs: BTreeMap::new(),
            note: Some(format!("runtime {rt} not found on host")),
            ..Default::default()
        });
    }
    if let Some(e) = &read.failed {
        return Err(format!("{rt} ps failed: {e}"));
    }
    let name = container_name(inst);
    let Some(c) = read
        .containers
        .iter()
        .find(|c| c["Name"].as_str().map(|n| n.trim_start_matches('/')) == Some(name))
    else {
        return Ok(Observation::default());
    };
    // A container that does not run is not what was declared: it is created again (the
    // creation removes the stopped one first).
    let status = c["State"]["Status"].as_str().unwrap_or("unknown");
    if !matches!(status, "running" | "restarting") {
        return Ok(Observation {
            exists: false,
            attrs: BTreeMap::new(),
            note: Some(format!("container is {status}")),
            ..Default::default()
        });
    }
    Ok(Observation {
        exists: true,
        attrs: observed_attrs(inst, c, &read.images),
        ..Default::default()
    })
}

/// The declared attributes as the container has them. When its `io.kz.spec` label is the hash of
/// this very declaration, the create-only attributes are known to be as declared (the runtime's
/// defaults and rewritings cannot make noise); otherwise each is read from `inspect`.
pub(super) fn observed_attrs(
    inst: &Instance,
    c: &Json,
    images: &BTreeMap<String, String>,
) -> BTreeMap<String, Value> {
    let spec_ok =
        spec_hash(inst).is_some_and(|h| c["Config"]["Labels"]["io.kz.spec"].as_str() == Some(&h));
    let mut attrs = BTreeMap::new();
    for (k, a) in &inst.attrs {
        let Some(desired) = a.known() else { continue };
        let v = if k == "image" {
            Some(image_attr(inst, c, images, desired, spec_ok))
        } else if spec_ok && CREATE_ONLY.contains(&k.as_str()) {
            Some(desired.clone())
        } else {
            field(k, c, desired)
        };
        if let Some(v) = v {
            attrs.insert(k.clone(), v);
        }
    }
    attrs
}

/// The image, said differently when the tag now names another image than the container's.
fn image_attr(
    inst: &Instance,
    c: &Json,
    images: &BTreeMap<String, String>,
    desired: &Value,
    spec_ok: bool,
) -> Value {
    let tag_id = inst
        .text("image")
        .and_then(|i| images.get(i))
        .filter(|id| !id.is_empty());
    let used = c["Image"].as_str().map(strip_digest);
    if let (Some(tag_id), Some(used)) = (tag_id, used)
        && *tag_id != used
    {
        let shown = desired.as_str().unwrap_or("");
        return Value::Text(format!("{shown} (tag now names another image)"));
    }
    if spec_ok {
        return desired.clone();
    }
    field("image", c, desired).unwrap_or_else(|| desired.clone())
}
