//! Tributary's dataflow operators, as extension traits on timely streams: keying, event-time
//! windows and aggregations, and joins.
//!
//! Operators know nothing of connectors; they read event time through
//! [`tributary_runtime::Timestamped`] and the job's settings through its
//! [`tributary_runtime::JobContext`].

pub mod aggregate;
pub mod join;
pub mod key_by;
pub mod keyed_aggregate;
pub mod window;

pub use aggregate::{
    Aggregator, Count, First, Last, Max, Mean, Min, Moments, MomentsAcc, MomentsOut, On, Quantile,
    Stats, StatsAcc, Sum, Summary, TopK,
};
pub use join::{
    AsOfJoin, Change, Enriched, IntervalJoin, JoinKind, Joined, Joins, Table, TableJoin,
    WindowJoin, WindowJoined,
};
pub use key_by::{key_hash, KeyBy, Keyed};
pub use keyed_aggregate::KeyedUpdate;
pub use window::{
    Global, SessionWindowed, Sessions, Sliding, Tumbling, Window, WindowAssigner, WindowResult,
    Windowed, Windowing, WithLate,
};
