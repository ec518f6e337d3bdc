//! Applying a plan: changes run concurrently in dependency order, each host capped by its transport,
//! and the state is saved after every finished change.

pub mod context;
mod gate;
mod jobs;
mod outcome;
mod schedule;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use petgraph::graph::NodeIndex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use kz_state::{ModuleState, State};

use crate::graph::{DepGraph, Node};
use crate::model::Stack;
use crate::plan::{Action, Plan, Runtime};
use crate::provider::{Applied, ApplyCtx, Provider, ProviderError};
use context::HostPool;
use jobs::Job;
use schedule::Schedule;

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
        /// What was done, when the action's name would say more (see [`Applied::note`]).
        note: Option<String>,
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
    /// A provider's word on a change that takes time.
    Progress {
        address: String,
        message: String,
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

/// How far the user's interrupts have gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Interrupt {
    #[default]
    None,
    /// The first: start nothing new, let what runs finish.
    Stop,
    /// The second (or SIGTERM): abort what runs.
    Abort,
}

/// Where a run learns of interrupts.
pub type Cancel = watch::Receiver<Interrupt>;

#[derive(Debug, Clone)]
pub struct ApplyOptions {
    pub parallelism: usize,
}

#[derive(Debug, Default)]
pub struct ApplyReport {
    pub applied: Vec<String>,
    /// Gates that passed (run again, or passing since the plan with nothing changed above them).
    pub verified: Vec<String>,
    pub failed: Vec<(String, String)>,
    pub not_attempted: Vec<(String, String)>,
    pub unreachable_hosts: BTreeSet<String>,
    pub interrupted: bool,
    /// The last state save failed: what is on disk may lag behind what was done.
    pub state_error: Option<String>,
    /// The state lock was lost mid-apply and could not be taken back: nothing new was started.
    pub lock_lost: Option<String>,
    /// Modules the lab run left out (from the plan), said again at the end: their checks held
    /// nothing back.
    pub skipped_modules: Vec<crate::overlay::SkippedModule>,
    pub skipped_resources: Vec<crate::overlay::SkippedResource>,
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

/// A job back from its task. Its concurrency permits travel back with it and are released only
/// once its outcome is saved: so at most `parallelism` changes are ever done or running without
/// being recorded.
struct Finished {
    node: NodeIndex,
    job: Job,
    elapsed: Duration,
    /// `None` when it never started (an interrupt, or the state lock lost, while it waited).
    outcome: Option<Result<Applied, ProviderError>>,
    _permits: Vec<OwnedSemaphorePermit>,
}

struct Ctx<'a> {
    runtime: &'a Runtime,
    state: &'a mut State,
    sink: &'a mut dyn StateSink,
    events: mpsc::UnboundedSender<Event>,
    cancel: Cancel,
    report: ApplyReport,
    parallelism: usize,
    hosts: Arc<HostPool>,
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
    runtime: &Runtime,
    events: mpsc::UnboundedSender<Event>,
    cancel: Cancel,
) -> ApplyReport {
    let saved = Some(state.clone());
    let mut ctx = Ctx {
        runtime,
        state,
        sink,
        events,
        cancel,
        report: ApplyReport {
            skipped_modules: plan.skipped_modules.clone(),
            skipped_resources: plan.skipped_resources.clone(),
            ..ApplyReport::default()
        },
        parallelism: opts.parallelism.max(1),
        hosts: Arc::new(HostPool::new(
            stack.hosts.clone(),
            Arc::clone(&runtime.transports),
        )),
        saved,
        halt: watch::channel(false).0,
    };
    // Phase 1: deletions, dependents before their dependencies.
    let declared = jobs::by_address(stack);
    let (delete_instances, delete_jobs) = jobs::deletions(stack, &declared, plan, ctx.state);
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
    let jobs = jobs::changes(stack, &declared, plan, ctx.state, &mut ctx.report.failed);
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
    for t in ctx.hosts.opened() {
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

    /// Runs the jobs of a graph: a node starts when all its predecessors (or, in reverse, its
    /// successors) are done; a failure marks everything that waits on it as not attempted.
    async fn run_graph(&mut self, g: &DepGraph, reverse: bool, mut jobs: Vec<Option<Job>>) {
        let mut schedule = Schedule::new(&g.graph, reverse);
        let global = Arc::new(Semaphore::new(self.parallelism));
        let mut running: JoinSet<Finished> = JoinSet::new();
        let mut aborted = false;

        loop {
            while let Some(n) = schedule.ready.pop() {
                self.start(g, n, &mut jobs, &mut schedule, &global, &mut running)
                    .await;
            }
            if running.is_empty() {
                break;
            }
            let next = tokio::select! {
                r = running.join_next() => r,
                _ = self.cancel.changed(), if !aborted => {
                    let level = *self.cancel.borrow();
                    self.report.interrupted = true;
                    aborted = level == Interrupt::Abort;
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
            self.settle_finished(finished.into_iter().flatten(), &mut schedule)
                .await;
        }
        // Whatever never became ready (after an abort) was not attempted.
        for job in jobs.into_iter().flatten() {
            self.not_attempted(&job.address, "not attempted: interrupted".into());
        }
    }

    /// Starts the job of a ready node, or settles the node at once (a barrier, an instance
    /// without change, a job that must not run).
    async fn start(
        &mut self,
        g: &DepGraph,
        n: NodeIndex,
        jobs: &mut [Option<Job>],
        schedule: &mut Schedule<'_>,
        global: &Arc<Semaphore>,
        running: &mut JoinSet<Finished>,
    ) {
        let job = match g.graph[n] {
            Node::Instance(i) => jobs[i].take(),
            _ => None,
        };
        let Some(job) = job else {
            // Done at once, passing on any block.
            let b = schedule.blocked_by[n.index()].clone();
            schedule.settle(n, b);
            return;
        };
        if job.action == Action::Verify
            && job.gate_passed_in_plan
            && !schedule.changed_above[n.index()]
            && schedule.blocked_by[n.index()].is_none()
        {
            // It passed when planned and nothing it depends on changed since.
            self.report.verified.push(job.address.clone());
            schedule.settle(n, None);
            return;
        }
        if self.report.lock_lost.is_none()
            && let Err(e) = self.sink.ensure_lock(self.state).await
        {
            self.report.lock_lost = Some(e);
            let _ = self.halt.send(true);
        }
        if let Some(failed) = self.settle_early(&job, &schedule.blocked_by[n.index()]) {
            schedule.settle(n, Some(failed));
            return;
        }
        let Some(provider) = self.runtime.providers.get(job.instance.kind()).cloned() else {
            let e = ProviderError::new(
                "apply",
                format!("no provider for `{}`", job.instance.kind()),
            );
            let address = job.address.clone();
            self.finish(&job, Duration::ZERO, Err(e));
            schedule.settle(n, Some(address));
            return;
        };
        // An instance on one host takes one of that host's sessions before it starts, so it
        // shows as running only once it really runs; others take sessions through the context.
        let own = match job.instance.host() {
            Some(h) => match self.hosts.get(h) {
                Ok((_, sessions)) => Some((h.to_string(), sessions)),
                Err(e) => {
                    let address = job.address.clone();
                    self.finish(&job, Duration::ZERO, Err(e));
                    schedule.settle(n, Some(address));
                    return;
                }
            },
            None => None,
        };
        running.spawn(run_job(JobTask {
            node: n,
            job,
            provider,
            global: Arc::clone(global),
            own,
            events: self.events.clone(),
            cancel: self.cancel.clone(),
            halt: self.halt.subscribe(),
            hosts: Arc::clone(&self.hosts),
        }));
    }

    /// Records what finished, saves the state once for all of it, and settles the nodes.
    async fn settle_finished(
        &mut self,
        finished: impl Iterator<Item = Result<Finished, tokio::task::JoinError>>,
        schedule: &mut Schedule<'_>,
    ) {
        let mut changed_state = false;
        let mut held = Vec::new();
        for r in finished {
            match r {
                Ok(Finished {
                    node,
                    job,
                    outcome: None,
                    ..
                }) => {
                    let b = if self.report.lock_lost.is_some() {
                        self.not_attempted(
                            &job.address,
                            "not attempted: the state lock was lost".into(),
                        );
                        format!("{} (state lock lost)", job.address)
                    } else {
                        self.interrupted(&job)
                    };
                    schedule.settle(node, Some(b));
                }
                Ok(Finished {
                    node,
                    job,
                    elapsed,
                    outcome: Some(result),
                    _permits,
                }) => {
                    held.push(_permits);
                    let ok = result.is_ok();
                    let changed = ok && !matches!(job.action, Action::Verify | Action::Adopt);
                    changed_state |= ok && job.action != Action::Verify;
                    if changed {
                        schedule.changed(node);
                    }
                    let address = job.address.clone();
                    self.finish(&job, elapsed, result);
                    schedule.settle(node, (!ok).then_some(address));
                }
                Err(e) if e.is_cancelled() => {
                    self.report
                        .failed
                        .push(("(in flight)".into(), "aborted by a second interrupt".into()));
                }
                // A provider that panicked fails its change with a message; it never vanishes.
                Err(e) => self
                    .report
                    .failed
                    .push(("(task)".into(), format!("a change panicked: {e}"))),
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
        drop(held);
    }
}

/// What a spawned job needs: its change, its provider, and the run's limits and channels.
struct JobTask {
    node: NodeIndex,
    job: Job,
    provider: Arc<dyn Provider>,
    global: Arc<Semaphore>,
    /// The instance's own host and its session limit, for an instance on one host.
    own: Option<(String, Arc<Semaphore>)>,
    events: mpsc::UnboundedSender<Event>,
    cancel: Cancel,
    halt: watch::Receiver<bool>,
    hosts: Arc<HostPool>,
}

/// Runs one job once its permits are free, unless an interrupt or the loss of the state lock came
/// while it waited.
async fn run_job(t: JobTask) -> Finished {
    let mut permits = Vec::new();
    if let Ok(p) = t.global.acquire_owned().await {
        permits.push(p);
    }
    if let Some((_, sessions)) = &t.own
        && let Ok(p) = Arc::clone(sessions).acquire_owned().await
    {
        permits.push(p);
    }
    let mut finished = Finished {
        node: t.node,
        elapsed: Duration::ZERO,
        outcome: None,
        _permits: permits,
        job: t.job,
    };
    if *t.cancel.borrow() != Interrupt::None || *t.halt.borrow() {
        return finished;
    }
    let job = &finished.job;
    let _ = t.events.send(Event::Started {
        address: job.address.clone(),
        action: job.action,
    });
    let cx = ApplyCtx::new(
        job.instance.clone(),
        job.changed.clone(),
        t.hosts,
        t.own.map(|(h, _)| h),
        t.events,
        t.cancel,
    );
    let started = Instant::now();
    let outcome = catch_panics(job.action, execute(t.provider.as_ref(), job, &cx)).await;
    finished.elapsed = started.elapsed();
    finished.outcome = Some(outcome);
    finished
}

/// A provider that panics fails its own change, with the message, so that the change is
/// reported by address and what waits on it is not attempted.
async fn catch_panics(
    action: Action,
    run: impl Future<Output = Result<Applied, ProviderError>>,
) -> Result<Applied, ProviderError> {
    let mut run = Box::pin(run);
    std::future::poll_fn(|task| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run.as_mut().poll(task))) {
            Ok(std::task::Poll::Ready(r)) => std::task::Poll::Ready(r),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(payload) => std::task::Poll::Ready(Err(ProviderError::new(
                action.verb(),
                crate::plan::panic_message(payload.as_ref()),
            ))),
        }
    })
    .await
}

async fn execute(
    provider: &dyn Provider,
    job: &Job,
    cx: &ApplyCtx,
) -> Result<Applied, ProviderError> {
    match job.action {
        Action::Create => provider.create(cx).await,
        Action::Update => provider.update(cx).await,
        Action::Replace => {
            if let Some(old) = &job.previous {
                provider.delete(&cx.with_instance(old.clone())).await?;
            } else {
                provider.delete(cx).await?;
            }
            provider.create(cx).await
        }
        Action::Delete => provider.delete(cx).await,
        Action::Adopt => Ok(Applied::default()),
        Action::Verify => match &job.instance.gate {
            Some(g) => gate::verify(provider, cx, g).await,
            None => Ok(Applied::default()),
        },
    }
}
