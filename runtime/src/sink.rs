//! The sink interface and the timely operator that drives every sink.

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;

use crate::error::Result;
use crate::flow::{job_context, Data, Events};
use crate::metrics as m;
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
        let ctx = SinkContext {
            name: sink.name().to_owned(),
            worker_index: scope.index(),
            workers: scope.peers(),
        };
        let job = job_context(&scope);
        let labels = [(m::SINK, ctx.name.clone()), (m::WORKER, ctx.worker_index.to_string())];
        let written = metrics::counter!(m::SINK_RECORDS, &labels);
        let mut writer = match sink.writer(&ctx) {
            Ok(w) => Some(w),
            Err(e) => {
                job.state.fail(e);
                None
            }
        };
        let mut last: Option<Option<Time>> = None;
        self.sink(Pipeline, &format!("sink:{}", ctx.name), move |(input, frontier)| {
            input.for_each(|_time, data| {
                if let Some(w) = writer.as_mut() {
                    written.increment(data.len() as u64);
                    job.state.count_out(data.len() as u64);
                    if let Err(e) = w.write(data) {
                        job.state.fail(e);
                        writer = None;
                    }
                }
                data.clear();
            });
            let now = frontier.frontier().first().copied();
            if last != Some(now) {
                last = Some(now);
                if let Some(w) = writer.as_mut() {
                    if let Err(e) = w.progress(now) {
                        job.state.fail(e);
                        writer = None;
                    }
                }
            }
        });
    }
}
