//! Applying a plan: changes run concurrently in dependency order, each host capped by its transport,
//! and the state is saved after every finished change.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use kz_state::{ModuleState, State};

use crate::graph::{DepGraph, Node};
use crate::model::{AttrValue, Instance, Stack};
use crate::plan::{Action, Env, Plan};
use crate::provider::{Provider, ProviderError, Transport};
use crate::record::{instance_from_state, record_instance};

/// Progress of an apply, sent to the output layer, which alone draws it.
#[derive(Debug, Clone)]
pub enum Event {
    Started {
        address: String,
        action: Action,
    },
    Finished {
        address: String,
        action: Action,
        elapsed: Duration,
        error: Option<String>,
    },
    NotAttempted {
        address: String,
        because: String,
    },
    /// An instance whose host could not be read during the plan: it fails without being tried.
    Unreadable {
        address: String,
        error: String,
    },
    /// An interrupt arrived: `abort` is false for the first (finish what runs), true for the second.
    Interrupted {
        abort: bool,
        running: usize,
    },
}

/// Where the state goes after every change (the local file or a database).
#[async_trait::async_trait]
pub trait StateSink: Send {
    async fn save(&mut self, state: &mut State) -> Result<(), String>;

    /// Called before each change starts: an error means the state lock is gone and nothing new
    /// may start (another kz may be applying the same stack).
    async fn ensure_lock(&mut self, state: &State) -> Result<(), String> {
        let _ = state;
        Ok(())
    }
}

/// How far an interrupt has gone: 1 = start nothing new, 2 = abort what runs.
pub type Cancel = watch::Receiver<u8>;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub not_attempted: Vec<(String, String)>,
    pub unreachable_hosts: BTreeSet<String>,
    pub interrupted: bool,
    /// The last state save failed: what is on disk may lag behind what was done.
    pub state_error: Option<String>,
    /// The state lock was lost mid-apply and could not be taken back: nothing new was started.
    pub lock_lost: Option<String>,
}

impl ApplyReport {
    pub fn success(&self) -> bool {
        self.failed.is_empty()
            && self.not_attempted.is_empty()
            && !self.interrupted
            && self.state_error.is_none()
            && self.lock_lost.is_none()
    }
}

/// The dependency bookkeeping of one graph run: how many predecessors each node still waits for,
/// what failure blocks it, and which nodes are ready.
struct Schedule<'g> {
    graph: &'g DiGraph<Node, ()>,
    /// The direction in which "done" propagates: to dependents, or (in reverse) to dependencies.
    after: Direction,
    remaining: Vec<usize>,
    blocked_by: Vec<Option<String>>,
    ready: Vec<NodeIndex>,
}

impl<'g> Schedule<'g> {
    fn new(graph: &'g DiGraph<Node, ()>, reverse: bool) -> Schedule<'g> {
        let (before, after) = if reverse {
            (Direction::Outgoing, Direction::Incoming)
        } else {
            (Direction::Incoming, Direction::Outgoing)
        };
        let remaining: Vec<usize> = graph
            .node_indices()
            .map(|n| graph.neighbors_directed(n, before).count())
            .collect();
        let ready = graph
            .node_indices()
            .filter(|n| remaining[n.index()] == 0)
            .collect();
        Schedule {
            graph,
            after,
            remaining,
            blocked_by: vec![None; graph.node_count()],
            ready,
        }
    }

    /// Marks `n` done; its followers inherit `blocked` (the failure that stops them), if any.
    fn settle(&mut self, n: NodeIndex, blocked: Option<String>) {
        for s in self.graph.neighbors_directed(n, self.after) {
            let i = s.index();
            if blocked.is_some() && self.blocked_by[i].is_none() {
                self.blocked_by[i].clone_from(&blocked);
            }
            self.remaining[i] -= 1;
            if self.remaining[i] == 0 {
                self.ready.push(s);
            }
        }
    }
}

/// A unit of work: one change of one instance.
struct Job {
    address: String,
    action: Action,
    instance: Instance,
    /// For replace: the instance as recorded, whose remains are removed first.
    previous: Option<Instance>,
    changed: Vec<String>,
    /// Fails at once with this message (it could not be read during the plan), and whether its
    /// whole host was unreachable.
    fail: Option<(String, bool)>,
}

/// A job back from its task, with its outcome: `None` when it never started because of an interrupt.
/// The job's concurrency permits travel back with it and are released only once its outcome is
/// saved: so at most `parallelism` changes are ever done or running without being recorded.
type Finished = (
    NodeIndex,
    Job,
    Duration,
    Option<Result<(), ProviderError>>,
    Permits,
);
type Permits = (
    Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
    Result<tokio::sync::OwnedSemaphorePermit, tokio::sync::AcquireError>,
);

struct Ctx<'a> {
    stack: &'a Stack,
    env: &'a Env,
    state: &'a mut State,
    sink: &'a mut dyn StateSink,
    events: mpsc::UnboundedSender<Event>,
    cancel: Cancel,
    report: ApplyReport,
    parallelism: usize,
    transports: HashMap<String, (Arc<dyn Transport>, Arc<Semaphore>)>,
    /// The state as last saved, to skip a final save that would change nothing.
    saved: Option<State>,
    /// Set when the state lock is lost: queued jobs must not start.
    halt: watch::Sender<bool>,
}

#[allow(clippy::too_many_arguments)]
pub async fn apply(
    stack: &Stack,
    plan: &Plan,
    state: &mut State,
    sink: &mut dyn StateSink,
    opts: &ApplyOptions,
    env: &Env,
    events: mpsc::UnboundedSender<Event>,
    cancel: Cancel,
) -> ApplyReport {
    let saved = Some(state.clone());
    let mut ctx = Ctx {
        stack,
        env,
        state,
        sink,
        events,
        cancel,
        report: ApplyReport::default(),
        parallelism: opts.parallelism.max(1),
        transports: HashMap::new(),
        saved,
        halt: watch::channel(false).0,
    };
    let by_address: HashMap<String, usize> = stack
        .instances
        .iter()
        .enumerate()
        .map(|(i, inst)| (inst.address.to_string(), i))
        .collect();

    // Phase 1: deletions, dependents before their dependencies.
    let mut delete_instances = Vec::new();
    let mut delete_jobs = Vec::new();
    for c in plan.changes.iter().filter(|c| c.action == Action::Delete) {
        let Some(recorded) = ctx.state.resources.get(&c.address) else {
            continue;
        };
        let from_state = instance_from_state(recorded);
        // A still-declared instance knows its secrets; the state only has their hashes.
        let inst = by_address
            .get(&c.address)
            .map_or(from_state, |i| stack.instances[*i].clone());
        delete_instances.push(inst.clone());
        delete_jobs.push(Some(Job {
            address: c.address.clone(),
            action: Action::Delete,
            instance: inst,
            previous: None,
            changed: Vec::new(),
            fail: None,
        }));
    }
    if !delete_jobs.is_empty() {
        let modules = ctx
            .state
            .modules
            .iter()
            .map(|(k, m)| (k.clone(), m.depends_on.clone()))
            .collect();
        match DepGraph::build_with(&delete_instances, &modules) {
            Ok(g) => ctx.run_graph(&g, true, delete_jobs).await,
            Err(c) => ctx.report.failed.push((
                "destroy".into(),
                format!("dependency cycle in state: {}", c.members.join(" -> ")),
            )),
        }
    }

    // Phase 2: everything else, dependencies first.
    for (name, m) in &stack.modules {
        ctx.state.modules.insert(
            name.clone(),
            ModuleState {
                depends_on: m.depends_on.clone(),
            },
        );
    }
    let mut jobs: Vec<Option<Job>> = (0..stack.instances.len()).map(|_| None).collect();
    for c in plan.changes.iter().filter(|c| c.action != Action::Delete) {
        let Some(&i) = by_address.get(&c.address) else {
            ctx.report.failed.push((
                c.address.clone(),
                "not in the stack any more (the plan is stale)".into(),
            ));
            continue;
        };
        let inst = stack.instances[i].clone();
        let previous = (c.action == Action::Replace)
            .then(|| ctx.state.resources.get(&c.address))
            .flatten()
            .map(|r| {
                let mut old = instance_from_state(r);
                // Fill hashed attributes from the stack where they still match, so the old
                // instance can be removed with its real values.
                for (k, a) in &mut old.attrs {
                    if let (AttrValue::Hashed(_), Some(d)) = (&a.value, inst.attrs.get(k))
                        && crate::record::same(Some(&*ctx.state), d, a)
                    {
                        *a = d.clone();
                    }
                }
                old
            });
        jobs[i] = Some(Job {
            address: c.address.clone(),
            action: c.action,
            changed: c.attributes.iter().map(|a| a.name.clone()).collect(),
            instance: inst,
            previous,
            fail: None,
        });
    }
    // Instances that could not be read fail, so that what depends on them is not attempted.
    for (i, inst) in stack.instances.iter().enumerate() {
        let addr = inst.address.to_string();
        let err = plan.errors.iter().find(|e| {
            e.address.as_deref() == Some(addr.as_str())
                || (e.address.is_none() && e.host == inst.address.host)
        });
        if let (Some(e), None) = (err, &jobs[i]) {
            jobs[i] = Some(Job {
                address: addr,
                action: Action::Update,
                instance: inst.clone(),
                previous: None,
                changed: Vec::new(),
                fail: Some((e.message.clone(), e.address.is_none())),
            });
        }
    }
    if jobs.iter().any(Option::is_some) {
        match DepGraph::build(&stack.instances, &stack.modules) {
            Ok(g) => ctx.run_graph(&g, false, jobs).await,
            Err(c) => ctx.report.failed.push((
                "apply".into(),
                format!("dependency cycle: {}", c.members.join(" -> ")),
            )),
        }
    }
    let live: BTreeSet<String> = ctx
        .state
        .resources
        .values()
        .map(|r| r.module.clone())
        .collect();
    ctx.state
        .modules
        .retain(|k, _| stack.modules.contains_key(k) || live.contains(k));
    // The last save covers what changed since the last change saved (module order, deletions
    // of empty modules); when nothing did, no new serial is written.
    if ctx.saved.as_ref() != Some(&*ctx.state) {
        ctx.save().await;
    }
    for (t, _) in ctx.transports.values() {
        t.finish().await;
    }
    ctx.report
}

impl Ctx<'_> {
    async fn save(&mut self) {
        self.state.kz_version = env!("CARGO_PKG_VERSION").into();
        match self.sink.save(self.state).await {
            Ok(()) => {
                self.report.state_error = None;
                self.saved = Some(self.state.clone());
            }
            Err(e) => self.report.state_error = Some(e),
        }
    }

    fn transport(
        &mut self,
        host: &str,
    ) -> Result<(Arc<dyn Transport>, Arc<Semaphore>), ProviderError> {
        if let Some(t) = self.transports.get(host) {
            return Ok(t.clone());
        }
        // The API pseudo-host is in the inventory only while the stack declares API resources;
        // deleting the last of them still needs it.
        let api = crate::load::lb::api_host();
        let h = match self.stack.hosts.get(host) {
            Some(h) => h,
            None if host == api.name => &api,
            None => {
                return Err(ProviderError::new(
                    "transport",
                    format!("host `{host}` is not in the inventory"),
                ));
            }
        };
        let t = self
            .env
            .transports
            .transport(h)
            .map_err(|e| ProviderError::transport("connect", e))?;
        let sem = Arc::new(Semaphore::new(t.max_sessions().max(1)));
        self.transports
            .insert(host.to_string(), (t.clone(), sem.clone()));
        Ok((t, sem))
    }

    /// Runs the jobs of a graph: a node starts when all its predecessors (or, in reverse, its
    /// successors) are done; a failure marks everything that waits on it as not attempted.
    async fn run_graph(&mut self, g: &DepGraph, reverse: bool, mut jobs: Vec<Option<Job>>) {
        let mut schedule = Schedule::new(&g.graph, reverse);
        let global = Arc::new(Semaphore::new(self.parallelism));
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut aborted = false;

        loop {
            // Start or settle everything that is ready.
            while let Some(n) = schedule.ready.pop() {
                let job = match g.graph[n] {
                    Node::Instance(i) => jobs[i].take(),
                    _ => None,
                };
                let Some(job) = job else {
                    // A barrier or an instance without change: done at once, passing on any block.
                    let b = schedule.blocked_by[n.index()].clone();
                    schedule.settle(n, b);
                    continue;
                };
                if self.report.lock_lost.is_none()
                    && let Err(e) = self.sink.ensure_lock(self.state).await
                {
                    self.report.lock_lost = Some(e);
                    let _ = self.halt.send(true);
                }
                if let Some(failed) = self.settle_early(&job, &schedule.blocked_by[n.index()]) {
                    schedule.settle(n, Some(failed));
                    continue;
                }
                let (transport, host_limit) = match self.transport(job.instance.host()) {
                    Ok(t) => t,
                    Err(e) => {
                        let address = job.address.clone();
                        self.finish(&job, Duration::ZERO, Err(e));
                        schedule.settle(n, Some(address));
                        continue;
                    }
                };
                let Some(provider) = self.env.providers.get(job.instance.kind()).cloned() else {
                    let e = ProviderError::new(
                        "apply",
                        format!("no provider for `{}`", job.instance.kind()),
                    );
                    let address = job.address.clone();
                    self.finish(&job, Duration::ZERO, Err(e));
                    schedule.settle(n, Some(address));
                    continue;
                };
                let global = Arc::clone(&global);
                let events = self.events.clone();
                let cancel = self.cancel.clone();
                let halt = self.halt.subscribe();
                running.spawn(async move {
                    let permits = (
                        global.acquire_owned().await,
                        host_limit.acquire_owned().await,
                    );
                    // An interrupt, or the loss of the state lock, may have come while this job
                    // waited for its turn.
                    if *cancel.borrow() > 0 || *halt.borrow() {
                        return (n, job, Duration::ZERO, None, permits);
                    }
                    let _ = events.send(Event::Started {
                        address: job.address.clone(),
                        action: job.action,
                    });
                    let started = Instant::now();
                    let result = execute(provider.as_ref(), &job, transport.as_ref()).await;
                    (n, job, started.elapsed(), Some(result), permits)
                });
            }
            if running.is_empty() {
                break;
            }
            let next = tokio::select! {
                r = running.join_next() => r,
                _ = self.cancel.changed(), if !aborted => {
                    let level = *self.cancel.borrow();
                    self.report.interrupted = true;
                    aborted = level >= 2;
                    let _ = self.events.send(Event::Interrupted { abort: aborted, running: running.len() });
                    if aborted {
                        running.abort_all();
                    }
                    continue;
                }
            };
            let mut finished = vec![next];
            // Collect whatever else finished meanwhile, so one state write covers them all.
            while let Some(r) = running.try_join_next() {
                finished.push(Some(r));
            }
            let mut changed_state = false;
            let mut held = Vec::new();
            for r in finished.into_iter().flatten() {
                match r {
                    Ok((n, job, _, None, _)) => {
                        let b = if self.report.lock_lost.is_some() {
                            self.not_attempted(
                                &job.address,
                                "not attempted: the state lock was lost".into(),
                            );
                            format!("{} (state lock lost)", job.address)
                        } else {
                            self.interrupted(&job)
                        };
                        schedule.settle(n, Some(b));
                    }
                    Ok((n, job, elapsed, Some(result), permits)) => {
                        held.push(permits);
                        let ok = result.is_ok();
                        changed_state |= ok;
                        let address = job.address.clone();
                        self.finish(&job, elapsed, result);
                        schedule.settle(n, (!ok).then_some(address));
                    }
                    Err(e) if e.is_cancelled() => {
                        self.report
                            .failed
                            .push(("(in flight)".into(), "aborted by a second interrupt".into()));
                    }
                    Err(e) => self.report.failed.push(("(task)".into(), e.to_string())),
                }
            }
            if changed_state {
                self.save().await;
            }
            // Before the next changes may start, make sure this kz still holds the state lock.
            if self.report.lock_lost.is_none()
                && let Err(e) = self.sink.ensure_lock(self.state).await
            {
                self.report.lock_lost = Some(e);
                let _ = self.halt.send(true);
            }
            // Only now may the next changes take these slots: what finished is recorded.
            held.clear();
        }
        // Whatever never became ready (after an abort) was not attempted.
        for job in jobs.into_iter().flatten() {
            self.not_attempted(&job.address, "not attempted: interrupted".into());
        }
    }

    /// Settles a job that must not run: its dependency failed, it could not be read, or an
    /// interrupt came. Returns what its dependents are blocked by, or `None` when it may run.
    fn settle_early(&mut self, job: &Job, blocked_by: &Option<String>) -> Option<String> {
        if let Some(because) = blocked_by {
            self.not_attempted(
                &job.address,
                format!("not attempted because {because} failed"),
            );
            return Some(because.clone());
        }
        if let Some((message, unreachable)) = job.fail.clone() {
            self.report
                .failed
                .push((job.address.clone(), message.clone()));
            if unreachable {
                self.report
                    .unreachable_hosts
                    .insert(job.instance.host().to_string());
            }
            let _ = self.events.send(Event::Unreadable {
                address: job.address.clone(),
                error: message,
            });
            return Some(job.address.clone());
        }
        if *self.cancel.borrow() > 0 {
            return Some(self.interrupted(job));
        }
        if self.report.lock_lost.is_some() {
            self.not_attempted(
                &job.address,
                "not attempted: the state lock was lost".into(),
            );
            return Some(format!("{} (state lock lost)", job.address));
        }
        None
    }

    /// Records a job an interrupt kept from starting; returns what its dependents are blocked by.
    fn interrupted(&mut self, job: &Job) -> String {
        self.report.interrupted = true;
        self.not_attempted(&job.address, "not attempted: interrupted".into());
        format!("{} (interrupted)", job.address)
    }

    fn not_attempted(&mut self, address: &str, because: String) {
        let _ = self.events.send(Event::NotAttempted {
            address: address.to_string(),
            because: because.clone(),
        });
        self.report
            .not_attempted
            .push((address.to_string(), because));
    }

    /// Records the outcome of a job in the report and, when it succeeded, in the state.
    fn finish(&mut self, job: &Job, elapsed: Duration, result: Result<(), ProviderError>) {
        let host = job.instance.host().to_string();
        let error = match result {
            Ok(()) => {
                if job.action == Action::Delete {
                    self.state.resources.remove(&job.address);
                } else {
                    let prev = self.state.resources.get(&job.address).cloned();
                    let rec = record_instance(self.state, &job.instance, prev.as_ref());
                    self.state.resources.insert(job.address.clone(), rec);
                }
                self.report.applied.push(job.address.clone());
                None
            }
            Err(e) => {
                if e.unreachable {
                    self.report.unreachable_hosts.insert(host.clone());
                }
                let addr_host = self
                    .stack
                    .hosts
                    .get(&host)
                    .map_or(host.clone(), |h| format!("{} ({})", h.name, h.address));
                let msg = format!("{addr_host}: {e}");
                self.report.failed.push((job.address.clone(), msg.clone()));
                Some(msg)
            }
        };
        let _ = self.events.send(Event::Finished {
            address: job.address.clone(),
            action: job.action,
            elapsed,
            error,
        });
    }
}

async fn execute(
    provider: &dyn Provider,
    job: &Job,
    t: &dyn Transport,
) -> Result<(), ProviderError> {
    match job.action {
        Action::Create => provider.create(&job.instance, t).await,
        Action::Update => provider.update(&job.instance, &job.changed, t).await,
        Action::Replace => {
            provider
                .delete(job.previous.as_ref().unwrap_or(&job.instance), t)
                .await?;
            provider.create(&job.instance, t).await
        }
        Action::Delete => provider.delete(&job.instance, t).await,
        Action::Adopt => Ok(()),
    }
}
