//! The read protocol of a plan: every probe of a host (each instance's own, a member's part of a
//! group's read, a provider's batch) joins that host's one script, run in one round trip and
//! cut back apart by nonce markers; instances behind an API are read by their provider, once
//! per provider, while the hosts are read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{PlanError, ReadStats, Runtime};
use crate::model::{Instance, Stack};
use crate::provider::{
    CommandSpec, MemberOutputs, Observation, ProbeOutput, Provider, TransportError,
};

/// One section of a host's read.
enum Section {
    /// A provider's batched probe of several of its instances on this host.
    Batch(Vec<usize>),
    /// One instance's probe on this host (its own, or this member's part of a group's).
    Single(usize),
}

/// What was read: observations by instance index, and what could not be read.
#[derive(Default)]
pub(crate) struct Reads {
    pub observations: HashMap<usize, Observation>,
    pub errors: Vec<PlanError>,
    pub stats: ReadStats,
    /// Hosts that could not be reached at all (connect, auth or host key).
    pub unreachable: HashSet<String>,
    /// How long each host's read took, and when it ended.
    pub timings: HashMap<String, (std::time::Duration, std::time::SystemTime)>,
}

/// Reads every selected instance, one transport round trip per host.
pub(crate) async fn read_all(
    stack: &Stack,
    instances: &[Instance],
    selected: &[bool],
    parallelism: usize,
    runtime: &Runtime,
) -> Reads {
    let mut reads = Reads::default();
    let (by_host, api) = sections(stack, instances, selected, runtime);
    let mut api_reads = tokio::task::JoinSet::new();
    let mut api_tasks = HashMap::new();
    for (kind, indices) in api {
        let Some(provider) = runtime.providers.get(kind) else {
            continue;
        };
        let provider = Arc::clone(provider);
        let insts: Vec<Instance> = indices.iter().map(|i| instances[*i].clone()).collect();
        let task = api_reads.spawn(async move { provider.read(&insts).await });
        api_tasks.insert(task.id(), indices);
    }
    let host_outputs = read_hosts(stack, by_host, parallelism, runtime, &mut reads).await;
    observe_all(instances, host_outputs, runtime, &mut reads);
    while let Some(joined) = api_reads.join_next_with_id().await {
        let (id, results) = match joined {
            Ok((id, results)) => (id, results.ok_or(None)),
            Err(e) => (e.id(), Err(Some(task_failure(e)))),
        };
        let Some(indices) = api_tasks.remove(&id) else {
            continue;
        };
        reads.stats.api_reads += 1;
        // Every instance gets an observation or an error: one left unread would be planned as
        // if it did not exist.
        let (results, failure) = match results {
            Ok(r) => (r, None),
            Err(failure) => (Vec::new(), failure),
        };
        let mut results = results.into_iter();
        for i in indices {
            let result = results.next().unwrap_or_else(|| {
                Err(failure
                    .clone()
                    .unwrap_or_else(|| "the provider's read gave no answer".to_string()))
            });
            record(&mut reads, &instances[i], None, i, result);
        }
    }
    reads
        .errors
        .sort_by(|a, b| (&a.host, &a.address).cmp(&(&b.host, &b.address)));
    reads
}

type HostSections<'a> = BTreeMap<&'a str, Vec<(Section, String)>>;

/// The sections of each host's read, and the instances read through an API, by kind.
fn sections<'a>(
    stack: &'a Stack,
    instances: &'a [Instance],
    selected: &[bool],
    runtime: &Runtime,
) -> (HostSections<'a>, BTreeMap<&'a str, Vec<usize>>) {
    let mut by_kind: BTreeMap<(&str, &str), Vec<usize>> = BTreeMap::new();
    let mut api: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut by_host: HostSections<'a> = BTreeMap::new();
    for (i, inst) in instances.iter().enumerate() {
        if !selected[i] {
            continue;
        }
        match (inst.read_host(), inst.members.is_empty()) {
            (Some(h), _) => by_kind.entry((h, inst.kind())).or_default().push(i),
            (None, true) => api.entry(inst.kind()).or_default().push(i),
            (None, false) => {
                let Some(provider) = runtime.providers.get(inst.kind()) else {
                    continue;
                };
                for m in &inst.members {
                    let Some((host, _)) = stack.hosts.get_key_value(m) else {
                        continue;
                    };
                    if let Some(p) = provider.probe(inst, host) {
                        by_host
                            .entry(host.as_str())
                            .or_default()
                            .push((Section::Single(i), p));
                    }
                }
            }
        }
    }
    for ((host, kind), indices) in by_kind {
        let Some(provider) = runtime.providers.get(kind) else {
            continue;
        };
        let insts: Vec<&Instance> = indices.iter().map(|i| &instances[*i]).collect();
        if insts.len() > 1
            && let Some(p) = provider.probe_batch(&insts)
        {
            by_host
                .entry(host)
                .or_default()
                .push((Section::Batch(indices), p));
            continue;
        }
        for i in indices {
            if let Some(p) = provider.probe(&instances[i], host) {
                by_host
                    .entry(host)
                    .or_default()
                    .push((Section::Single(i), p));
            }
        }
    }
    (by_host, api)
}

/// What one host's read gave back: its sections and their outputs, or why it failed.
struct HostRead {
    host: String,
    label: String,
    sections: Vec<Section>,
    outputs: Result<Vec<Option<ProbeOutput>>, String>,
    /// Why a section has no output, when the read ran but was cut short.
    missing: String,
}

async fn read_hosts(
    stack: &Stack,
    by_host: HostSections<'_>,
    parallelism: usize,
    runtime: &Runtime,
    reads: &mut Reads,
) -> Vec<HostRead> {
    let limit = Arc::new(Semaphore::new(parallelism.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut spawned = HashMap::new();
    let mut out = Vec::new();
    for (host_name, probes) in by_host {
        let Some(host) = stack.hosts.get(host_name) else {
            continue;
        };
        let label = format!("{} ({})", host.name, host.address);
        let (sections, scripts): (Vec<Section>, Vec<String>) = probes.into_iter().unzip();
        let transport = match runtime.transports.transport(host) {
            Ok(t) => t,
            Err(e) => {
                out.push(HostRead {
                    host: host_name.to_string(),
                    outputs: Err(format!("{label}: {e}")),
                    label,
                    sections,
                    missing: String::new(),
                });
                continue;
            }
        };
        let timeout = host.ssh.command_timeout;
        let limit = Arc::clone(&limit);
        let host = host_name.to_string();
        let task_label = label.clone();
        let task = tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let started = std::time::Instant::now();
            let r = read_host(transport.as_ref(), &scripts, timeout, &task_label).await;
            (r, started.elapsed())
        });
        spawned.insert(task.id(), (host, label, sections));
    }
    while let Some(joined) = tasks.join_next_with_id().await {
        let (id, result) = match joined {
            Ok((id, r)) => (id, Ok(r)),
            Err(e) => (e.id(), Err(e)),
        };
        let Some((host, label, sections)) = spawned.remove(&id) else {
            continue;
        };
        // A read that panicked fails its host with a message: its instances are not planned
        // (planned unread, they would look absent, or in sync).
        let ((outputs, connections, unreachable), elapsed) = match result {
            Ok(r) => r,
            Err(e) => (
                (Err(format!("{label}: read: {}", task_failure(e))), 0, false),
                std::time::Duration::ZERO,
            ),
        };
        if unreachable {
            reads.unreachable.insert(host.clone());
        }
        reads
            .timings
            .insert(host.clone(), (elapsed, std::time::SystemTime::now()));
        // Only a host that answered was read; a failed attempt is still a round trip.
        if outputs.is_ok() {
            reads.stats.hosts += 1;
        }
        reads.stats.round_trips += 1;
        reads.stats.connections += connections;
        let (outputs, missing) = match outputs {
            Ok((outs, missing)) => (Ok(outs), missing),
            Err(e) => (Err(e), String::new()),
        };
        out.push(HostRead {
            host,
            label,
            sections,
            outputs,
            missing,
        });
    }
    out
}

/// Why a task ended without a result: a panic, with its message, or a cancellation.
pub(crate) fn task_failure(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return "the task was cancelled".into();
    }
    panic_message(e.into_panic().as_ref())
}

/// A panic's payload as the message of an error.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    format!("kz panicked (a bug, please report it): {message}")
}

/// What one host's batched read gave: each section's output and why one may be missing, or
/// the error that names the host; how many connections it opened; whether it was unreachable.
type HostOutputs = (
    Result<(Vec<Option<ProbeOutput>>, String), String>,
    usize,
    bool,
);

/// Runs one host's probes in one round trip and cuts the output back into sections.
async fn read_host(
    transport: &dyn crate::provider::Transport,
    scripts: &[String],
    timeout: std::time::Duration,
    label: &str,
) -> HostOutputs {
    let nonce = crate::random_hex(8);
    let script = batch_script(&nonce, scripts.iter().map(String::as_str));
    let result = transport
        .run(CommandSpec {
            script,
            stdin: None,
            timeout,
            ..Default::default()
        })
        .await;
    let connections = transport.connections();
    let unreachable = matches!(
        result,
        Err(TransportError::Connect(_) | TransportError::Auth(_) | TransportError::HostKey(_))
    );
    let outputs = match result {
        Ok(o) => {
            let sections = split_batch(&nonce, &o.stdout, scripts.len());
            let missing = format!(
                "probe output missing (read exited {}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            Ok((sections, missing))
        }
        Err(e) => {
            // A host that cannot be reached at all reads best without the step name.
            let step = match e {
                TransportError::Connect(_)
                | TransportError::Auth(_)
                | TransportError::HostKey(_) => "",
                _ => "read: ",
            };
            Err(format!("{label}: {step}{e}"))
        }
    };
    (outputs, connections, unreachable)
}

/// Turns what the hosts printed into observations: batches and single probes at once, groups
/// once every member's output is in.
fn observe_all(
    instances: &[Instance],
    host_reads: Vec<HostRead>,
    runtime: &Runtime,
    reads: &mut Reads,
) {
    let mut members: HashMap<usize, MemberOutputs> = HashMap::new();
    let mut failed_groups: HashSet<usize> = HashSet::new();
    for mut hr in host_reads {
        let outputs = match std::mem::replace(&mut hr.outputs, Ok(Vec::new())) {
            Ok(o) => o,
            Err(message) => {
                // The host's own instances fail with the host; a group it belongs to is unknown.
                reads.errors.push(PlanError {
                    host: hr.host.clone(),
                    address: None,
                    message: message.clone(),
                });
                for s in &hr.sections {
                    if let Section::Single(i) = s
                        && instances[*i].address.host.is_none()
                        && failed_groups.insert(*i)
                    {
                        reads.errors.push(PlanError {
                            host: hr.host.clone(),
                            address: Some(instances[*i].address.to_string()),
                            message: format!("read {}: member {message}", instances[*i].address),
                        });
                    }
                }
                continue;
            }
        };
        for (section, out) in hr.sections.iter().zip(outputs) {
            observe_section(instances, &hr, section, out, runtime, reads, &mut members);
        }
    }
    for (i, outs) in members {
        if failed_groups.contains(&i) {
            continue;
        }
        let inst = &instances[i];
        let result = match runtime.providers.get(inst.kind()) {
            Some(p) => p.observe(inst, &outs),
            None => Err("no provider".into()),
        };
        record(reads, inst, None, i, result);
    }
}

fn observe_section(
    instances: &[Instance],
    hr: &HostRead,
    section: &Section,
    out: Option<ProbeOutput>,
    runtime: &Runtime,
    reads: &mut Reads,
    members: &mut HashMap<usize, MemberOutputs>,
) {
    let missing = || hr.missing.clone();
    match section {
        Section::Single(i) if instances[*i].address.host.is_none() => {
            // A member's part of a group's read: kept until every member is in.
            match out {
                Some(o) => members
                    .entry(*i)
                    .or_default()
                    .outputs
                    .push((hr.host.clone(), o)),
                None => record(reads, &instances[*i], Some(hr), *i, Err(missing())),
            }
        }
        Section::Single(i) => {
            let inst = &instances[*i];
            let result = match (out, runtime.providers.get(inst.kind())) {
                (Some(o), Some(p)) => p.observe(inst, &MemberOutputs::single(o, &hr.host)),
                (None, _) => Err(missing()),
                (_, None) => Err("no provider".into()),
            };
            record(reads, inst, Some(hr), *i, result);
        }
        Section::Batch(indices) => {
            let insts: Vec<&Instance> = indices.iter().map(|i| &instances[*i]).collect();
            let provider: Option<&Arc<dyn Provider>> = runtime.providers.get(insts[0].kind());
            let results: Vec<Result<Observation, String>> = match (out, provider) {
                (Some(o), Some(p)) => p.observe_batch(&insts, &o),
                _ => insts.iter().map(|_| Err(missing())).collect(),
            };
            for (i, result) in indices.iter().zip(results) {
                record(reads, &instances[*i], Some(hr), *i, result);
            }
        }
    }
}

/// Keeps what was read of instance `i`, or the error that names it.
fn record(
    reads: &mut Reads,
    inst: &Instance,
    hr: Option<&HostRead>,
    i: usize,
    result: Result<Observation, String>,
) {
    match result {
        Ok(o) => {
            reads.observations.insert(i, o);
        }
        Err(message) => {
            let (host, prefix) = match hr {
                Some(hr) => (hr.host.clone(), format!("{}: ", hr.label)),
                None => (inst.address.host.clone().unwrap_or_default(), String::new()),
            };
            reads.errors.push(PlanError {
                host,
                address: Some(inst.address.to_string()),
                message: format!("{prefix}read {}: {message}", inst.address),
            });
        }
    }
}

/// Joins probes into one script; each section is framed by markers carrying a random nonce, so no
/// output can be mistaken for a marker.
pub fn batch_script<'a>(nonce: &str, probes: impl Iterator<Item = &'a str>) -> String {
    let mut s = String::new();
    for (i, p) in probes.enumerate() {
        s.push_str(&format!(
            "printf '%s\\n' 'KZ-{nonce}-BEGIN-{i}'\n( {p}\n) </dev/null\nprintf '\\nKZ-{nonce}-END-{i} %d\\n' \"$?\"\n"
        ));
    }
    s
}

/// Cuts the batched output back into one section per probe.
pub fn split_batch(nonce: &str, stdout: &[u8], count: usize) -> Vec<Option<ProbeOutput>> {
    let mut out = Vec::with_capacity(count);
    let mut pos = 0;
    for i in 0..count {
        let begin = format!("KZ-{nonce}-BEGIN-{i}\n");
        let end = format!("\nKZ-{nonce}-END-{i} ");
        let section = find(&stdout[pos..], begin.as_bytes()).and_then(|b| {
            let start = pos + b + begin.len();
            let e = start + find(&stdout[start..], end.as_bytes())?;
            let after = e + end.len();
            let nl = after + find(&stdout[after..], b"\n")?;
            let status = std::str::from_utf8(&stdout[after..nl])
                .ok()?
                .trim()
                .parse()
                .ok()?;
            pos = nl + 1;
            Some(ProbeOutput {
                stdout: stdout[start..e].to_vec(),
                status,
            })
        });
        out.push(section);
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests;
