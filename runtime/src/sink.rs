//! The sink interface and the timely operator that drives every sink.

use std::sync::Arc;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::InputHandleCore;
use timely::dataflow::operators::Capability;

use crate::checkpoint::Checkpointer;
use crate::context::{job_context, Data, Events, JobState};
use crate::error::Result;
use crate::metrics as m;
use crate::status::Status;
use crate::time::Time;

/// Where a worker's writer stands in the job.
#[derive(Debug, Clone)]
pub struct SinkContext {
    /// The sink's name.
    pub name: String,
    /// This worker's index among all workers.
    pub worker_index: usize,
    /// The number of workers in the job.
    pub workers: usize,
    /// Whether the job takes checkpoints: output then becomes visible only through
    /// [`SinkWriter::commit`].
    pub checkpointed: bool,
    /// The job's identity: its checkpoint id (`runtime.checkpoint.job_id`) when it takes
    /// checkpoints, its name otherwise. Stable over restarts.
    pub job: String,
    /// The number of this run's first checkpoint: 1 on a fresh start, one more than the
    /// checkpoint restored from otherwise (0 without checkpoints).
    pub first_checkpoint: u64,
}

impl SinkContext {
    /// This worker's `tributary_sink_bytes_total` counter for the sink: writers add the bytes
    /// they write out.
    pub fn bytes_counter(&self) -> metrics::Counter {
        let labels = [(m::SINK, self.name.clone()), (m::WORKER, self.worker_index.to_string())];
        metrics::counter!(m::SINK_BYTES, &labels)
    }
}

/// A destination for records, resolved before the workers start.
pub trait Sink<D>: Send + Sync + 'static {
    /// One worker's writer.
    type Writer: SinkWriter<D>;

    /// A stable, human name for logs and metrics.
    fn name(&self) -> &str;

    /// Opens this worker's writer. Called once on every worker.
    fn writer(&self, ctx: &SinkContext) -> Result<Self::Writer>;
}

/// One worker's writer.
pub trait SinkWriter<D>: 'static {
    /// Writes a batch of records (the writer may drain `records`).
    fn write(&mut self, records: &mut Vec<D>) -> Result<()>;

    /// All records with timely time below `frontier` have been written; `None` means the
    /// input has ended and the writer must flush and close.
    fn progress(&mut self, frontier: Option<Time>) -> Result<()>;

    /// Checkpoints, phase one of a two-phase commit: makes everything written so far durable
    /// without making it visible, and returns what a restarted job needs to make it visible
    /// (encode with [`crate::checkpoint::encode`]). A writer that cannot hold output back
    /// (at-least-once) flushes and returns an empty state.
    fn prepare(&mut self, checkpoint: u64) -> Result<Vec<u8>> {
        let _ = checkpoint;
        Err(crate::Error::Checkpoint("this sink does not support checkpoints".to_owned()))
    }

    /// Phase two: checkpoint `checkpoint` is complete, so the output prepared for it and for
    /// earlier ones becomes visible.
    fn commit(&mut self, checkpoint: u64) -> Result<()> {
        let _ = checkpoint;
        Ok(())
    }

    /// Continues from the checkpoint the job restarts from, given what every worker's writer
    /// prepared for it: makes that output visible (it may have been already) and removes any
    /// output prepared after it. Called before the first write.
    fn restore(&mut self, prepared: Vec<Vec<u8>>) -> Result<()> {
        let _ = prepared;
        Err(crate::Error::Checkpoint("this sink does not support checkpoints".to_owned()))
    }

    /// The job stops without a last checkpoint: output prepared since the latest complete one
    /// will never be committed (a restart writes it again).
    fn discard(&mut self) {}
}

/// Sends a stream to a sink.
pub trait SinkExt<D> {
    /// Writes every record of the stream to `sink`, on every worker. A write error fails the
    /// job (its sources stop, the error is reported on exit).
    ///
    /// # Examples
    /// ```
    /// use tributary_runtime::{Result, Sink, SinkContext, SinkExt, SinkWriter, Time};
    /// use timely::dataflow::operators::ToStream;
    ///
    /// struct Discard;
    /// impl Sink<u64> for Discard {
    ///     type Writer = Discard;
    ///     fn name(&self) -> &str { "discard" }
    ///     fn writer(&self, _: &SinkContext) -> Result<Discard> { Ok(Discard) }
    /// }
    /// impl SinkWriter<u64> for Discard {
    ///     fn write(&mut self, records: &mut Vec<u64>) -> Result<()> { records.clear(); Ok(()) }
    ///     fn progress(&mut self, _: Option<Time>) -> Result<()> { Ok(()) }
    /// }
    ///
    /// timely::example(|scope| {
    ///     (0..10u64).to_stream(scope).container::<Vec<u64>>().sink_to(&Discard);
    /// });
    /// ```
    fn sink_to<S: Sink<D>>(self, sink: &S);
}

impl<D: Data> SinkExt<D> for Events<'_, D> {
    fn sink_to<S: Sink<D>>(self, sink: &S) {
        let scope = self.scope();
        let job = job_context(&scope);
        let ctx = SinkContext {
            name: sink.name().to_owned(),
            worker_index: scope.index(),
            workers: scope.peers(),
            checkpointed: job.checkpoints.is_some(),
            job: job.checkpoints.as_ref().map_or(&*job.name, |c| c.job()).to_owned(),
            first_checkpoint: job.checkpoints.as_ref().map_or(0, |c| c.first_id()),
        };
        let labels = [(m::SINK, ctx.name.clone()), (m::WORKER, ctx.worker_index.to_string())];
        let name = format!("sink:{}", ctx.name);
        let mut builder = OperatorBuilder::new(name.clone(), scope);
        let info = builder.operator_info();
        let mut input = builder.new_input(self, Pipeline);
        // No records leave a sink; its output only holds a capability, which keeps the
        // dataflow running until the last checkpoint has made the output visible.
        let (_, _) = builder.new_output::<Vec<()>>();
        let checkpointer = job.checkpointer(&scope, &name, &info.address);
        let worker = ctx.worker_index;
        let writer = sink.writer(&ctx);

        builder.build(move |mut capabilities| {
            let hold = checkpointer.as_ref().and(capabilities.pop());
            let driver = writer.and_then(|writer| {
                let mut driver = SinkDriver {
                    writer,
                    checkpointer,
                    hold,
                    stash: Vec::new(),
                    last: None,
                    committed: 0,
                    finished: false,
                    written: metrics::counter!(m::SINK_RECORDS, &labels),
                    endpoint: job.status.sink(&ctx.name, ctx.worker_index),
                    status: Arc::clone(&job.status),
                    latency: metrics::histogram!(m::LATENCY, &labels),
                    state: Arc::clone(&job.state),
                };
                driver.restore()?;
                Ok(driver)
            });
            let mut driver = driver.map_err(|error| job.state.fail(error)).ok();
            move |frontiers| {
                let _activation = crate::logging::activation(&name, worker);
                let frontier = frontiers[0].frontier().first().copied();
                let Some(d) = driver.as_mut() else {
                    input.for_each(|_, data| data.clear());
                    return;
                };
                let outcome = d.step(&mut input, frontier);
                if let Err(e) = outcome {
                    job.state.fail(e);
                    d.writer.discard();
                    driver = None;
                } else if d.hold.is_none() && frontier.is_none() {
                    driver = None;
                }
            }
        });
    }
}

/// The per-worker state of a running sink.
struct SinkDriver<D, W: SinkWriter<D>> {
    writer: W,
    checkpointer: Option<Checkpointer>,
    /// Held while output may still await its commit (checkpointed jobs only).
    hold: Option<Capability<Time>>,
    /// Records at or after a pending cut, written once the writer has prepared.
    stash: Vec<Vec<D>>,
    /// The frontier last reported to the writer.
    last: Option<Option<Time>>,
    /// The latest checkpoint committed to the writer.
    committed: u64,
    /// The input has ended and the writer has prepared its last output.
    finished: bool,
    written: metrics::Counter,
    endpoint: Arc<crate::status::Endpoint>,
    /// The process's status, for the latency of what is written.
    status: Arc<Status>,
    latency: metrics::Histogram,
    state: Arc<JobState>,
}

impl<D, W: SinkWriter<D>> SinkDriver<D, W> {
    fn restore(&mut self) -> Result<()> {
        let Some(c) = &self.checkpointer else { return Ok(()) };
        if let Some(restore) = c.restore::<Vec<u8>>()? {
            self.writer.restore(restore.states)?;
            self.committed = c.committed();
        }
        Ok(())
    }

    fn write(&mut self, data: &mut Vec<D>) -> Result<()> {
        self.written.increment(data.len() as u64);
        self.endpoint.add_records(data.len() as u64);
        self.writer.write(data)?;
        data.clear();
        Ok(())
    }

    fn progress(&mut self, frontier: Option<Time>) -> Result<()> {
        if self.last != Some(frontier) {
            self.last = Some(frontier);
            self.writer.progress(frontier)?;
        }
        Ok(())
    }

    fn step<P>(
        &mut self,
        input: &mut InputHandleCore<Time, Vec<D>, P>,
        frontier: Option<Time>,
    ) -> Result<()>
    where
        P: timely::communication::Pull<timely::dataflow::channels::Message<Time, Vec<D>>>,
    {
        let cut = self.checkpointer.as_ref().and_then(|c| c.pending());
        let mut result = Ok(());
        let mut measured = None;
        input.for_each(|cap, data| {
            // Latency: once per time per activation (results of one time come together).
            let time = cap.least().copied();
            if time.is_some() && measured != time {
                measured = time;
                let now = std::time::Instant::now();
                if let Some(latency) = time.and_then(|t| self.status.emitted(t, now)) {
                    self.latency.record(latency.as_secs_f64());
                }
            }
            let late = cut.is_some_and(|cut| cap.least().is_some_and(|&t| t >= cut));
            if late {
                self.stash.push(std::mem::take(data));
            } else if result.is_ok() {
                result = self.write(data);
            }
        });
        result?;
        let Some(id) = self.checkpointer.as_ref().map(|c| c.next_id()) else {
            return self.progress(frontier);
        };
        if let Some(cut) = cut.filter(|&cut| frontier.is_none_or(|f| f >= cut)) {
            self.progress(Some(cut))?;
            let prepared = self.writer.prepare(id)?;
            self.checkpointer.as_mut().map_or(Ok(()), |c| c.save(&prepared))?;
            for mut batch in std::mem::take(&mut self.stash) {
                self.write(&mut batch)?;
            }
        }
        if frontier.is_none() && !self.finished {
            // The input has ended: this output holds for every later checkpoint.
            self.finished = true;
            self.progress(None)?;
            let id = self.checkpointer.as_ref().map_or(id, |c| c.next_id());
            let prepared = self.writer.prepare(id)?;
            self.checkpointer.as_mut().map_or(Ok(()), |c| c.finish(&prepared))?;
        }
        if !self.finished {
            // Records at or after a pending cut are not written yet.
            let pending = self.checkpointer.as_ref().and_then(|c| c.pending());
            self.progress(match (pending, frontier) {
                (Some(cut), Some(f)) => Some(f.min(cut)),
                (Some(cut), None) => Some(cut),
                (None, f) => f,
            })?;
        }
        let Some(c) = self.checkpointer.as_ref() else { return Ok(()) };
        let committed = c.committed();
        if committed > self.committed {
            self.committed = committed;
            self.writer.commit(committed)?;
        }
        if c.is_over() && self.hold.is_some() {
            if self.state.stop_requested() {
                self.writer.discard();
            }
            self.hold = None;
        }
        Ok(())
    }
}
