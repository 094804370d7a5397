//! Aggregations: the [`Aggregator`] trait (init / add / merge / finish) and the built-ins.
//!
//! An aggregator folds records into an accumulator. Accumulators of the same window on
//! different workers are merged, which is what lets windows pre-aggregate before the keyed
//! exchange (two-phase aggregation): a hot key costs one partial per batch, not one record.

use std::marker::PhantomData;

use serde::{Deserialize, Serialize};
use tributary_runtime::{Data, EventTime, Timestamped};

/// A user-definable aggregation over records of type `V`.
///
/// `merge` must agree with `add`: folding records into two accumulators and merging them
/// gives the same result as folding all records into one.
///
/// # Examples
/// A volume-weighted average price:
/// ```
/// use serde::{Deserialize, Serialize};
/// use tributary_operators::Aggregator;
///
/// struct Trade { price: f64, size: f64 }
///
/// #[derive(Clone)]
/// struct Vwap;
///
/// #[derive(Clone, Default, Serialize, Deserialize)]
/// struct Acc { notional: f64, volume: f64 }
///
/// impl Aggregator<Trade> for Vwap {
///     type Acc = Acc;
///     type Out = f64;
///     fn init(&self) -> Acc { Acc::default() }
///     fn add(&self, acc: &mut Acc, t: &Trade) { acc.notional += t.price * t.size; acc.volume += t.size; }
///     fn merge(&self, acc: &mut Acc, other: Acc) { acc.notional += other.notional; acc.volume += other.volume; }
///     fn finish(&self, acc: &Acc) -> f64 { acc.notional / acc.volume }
/// }
///
/// let mut acc = Vwap.init();
/// Vwap.add(&mut acc, &Trade { price: 10.0, size: 1.0 });
/// Vwap.add(&mut acc, &Trade { price: 20.0, size: 3.0 });
/// assert_eq!(Vwap.finish(&acc), 17.5);
/// ```
pub trait Aggregator<V>: Clone + 'static {
    /// The running state of one key in one window. It travels between workers.
    type Acc: Data;
    /// The result.
    type Out: Data;

    /// An empty accumulator.
    fn init(&self) -> Self::Acc;
    /// Folds one record in.
    fn add(&self, acc: &mut Self::Acc, value: &V);
    /// Folds another accumulator in.
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc);
    /// The result so far.
    fn finish(&self, acc: &Self::Acc) -> Self::Out;
}

/// Counts records.
#[derive(Debug, Clone, Copy, Default)]
pub struct Count;

impl<V> Aggregator<V> for Count {
    type Acc = u64;
    type Out = u64;
    fn init(&self) -> u64 {
        0
    }
    #[inline]
    fn add(&self, acc: &mut u64, _: &V) {
        *acc += 1;
    }
    fn merge(&self, acc: &mut u64, other: u64) {
        *acc += other;
    }
    fn finish(&self, acc: &u64) -> u64 {
        *acc
    }
}

/// Sums a field.
#[derive(Clone)]
pub struct Sum<F>(pub F);

impl<V, T, F> Aggregator<V> for Sum<F>
where
    F: Fn(&V) -> T + Clone + 'static,
    T: Data + Default + std::ops::AddAssign,
{
    type Acc = T;
    type Out = T;
    fn init(&self) -> T {
        T::default()
    }
    #[inline]
    fn add(&self, acc: &mut T, value: &V) {
        *acc += (self.0)(value);
    }
    fn merge(&self, acc: &mut T, other: T) {
        *acc += other;
    }
    fn finish(&self, acc: &T) -> T {
        acc.clone()
    }
}

/// The smallest value of a field (`None` for an empty window).
#[derive(Clone)]
pub struct Min<F>(pub F);

/// The largest value of a field (`None` for an empty window).
#[derive(Clone)]
pub struct Max<F>(pub F);

macro_rules! extremum {
    ($name:ident, $better:expr) => {
        impl<V, T, F> Aggregator<V> for $name<F>
        where
            F: Fn(&V) -> T + Clone + 'static,
            T: Data + PartialOrd,
        {
            type Acc = Option<T>;
            type Out = Option<T>;
            fn init(&self) -> Option<T> {
                None
            }
            #[inline]
            fn add(&self, acc: &mut Option<T>, value: &V) {
                self.merge(acc, Some((self.0)(value)));
            }
            fn merge(&self, acc: &mut Option<T>, other: Option<T>) {
                let better: fn(&T, &T) -> bool = $better;
                if let Some(x) = other {
                    if acc.as_ref().is_none_or(|a| better(&x, a)) {
                        *acc = Some(x);
                    }
                }
            }
            fn finish(&self, acc: &Option<T>) -> Option<T> {
                acc.clone()
            }
        }
    };
}

extremum!(Min, |x, a| x < a);
extremum!(Max, |x, a| x > a);

/// Values are summed exactly in millionths, so a sum or mean does not depend on the order of
/// additions, and results are identical for any number of workers. Digits beyond the sixth
/// decimal are rounded.
const SCALE: f64 = 1e6;

#[inline]
fn to_micros(x: f64) -> i128 {
    (x * SCALE).round() as i128
}

#[inline]
fn from_micros(x: i128) -> f64 {
    x as f64 / SCALE
}

/// The arithmetic mean of a field (`NaN` for an empty window), summed exactly in millionths.
#[derive(Clone)]
pub struct Mean<F>(pub F);

impl<V, F> Aggregator<V> for Mean<F>
where
    F: Fn(&V) -> f64 + Clone + 'static,
{
    type Acc = (i128, u64);
    type Out = f64;
    fn init(&self) -> (i128, u64) {
        (0, 0)
    }
    #[inline]
    fn add(&self, acc: &mut (i128, u64), value: &V) {
        acc.0 += to_micros((self.0)(value));
        acc.1 += 1;
    }
    fn merge(&self, acc: &mut (i128, u64), other: (i128, u64)) {
        acc.0 += other.0;
        acc.1 += other.1;
    }
    fn finish(&self, acc: &(i128, u64)) -> f64 {
        from_micros(acc.0) / acc.1 as f64
    }
}

/// The value of a field at the earliest event time (ties: the smaller value), `None` when
/// empty. Deterministic whatever the arrival order.
#[derive(Clone)]
pub struct First<F>(pub F);

/// The value of a field at the latest event time (ties: the larger value), `None` when
/// empty. Deterministic whatever the arrival order.
#[derive(Clone)]
pub struct Last<F>(pub F);

macro_rules! by_time {
    ($name:ident, $better:expr) => {
        impl<V, T, F> Aggregator<V> for $name<F>
        where
            V: Timestamped,
            F: Fn(&V) -> T + Clone + 'static,
            T: Data + PartialOrd,
        {
            type Acc = Option<(EventTime, T)>;
            type Out = Option<T>;
            fn init(&self) -> Self::Acc {
                None
            }
            #[inline]
            fn add(&self, acc: &mut Self::Acc, value: &V) {
                self.merge(acc, Some((value.event_time(), (self.0)(value))));
            }
            fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
                let better: fn(&(EventTime, T), &(EventTime, T)) -> bool = $better;
                if let Some(x) = other {
                    if acc.as_ref().is_none_or(|a| better(&x, a)) {
                        *acc = Some(x);
                    }
                }
            }
            fn finish(&self, acc: &Self::Acc) -> Option<T> {
                acc.as_ref().map(|(_, v)| v.clone())
            }
        }
    };
}

by_time!(First, |x, a| x.0 < a.0 || (x.0 == a.0 && x.1 < a.1));
by_time!(Last, |x, a| x.0 > a.0 || (x.0 == a.0 && x.1 > a.1));

/// Summary statistics of a field: count, sum, min, max and mean. The sum is exact in
/// millionths (see [`Mean`]), so results do not depend on the number of workers.
#[derive(Clone)]
pub struct Stats<F>(pub F);

/// The result of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Number of values.
    pub count: u64,
    /// Their sum.
    pub sum: f64,
    /// The smallest (`+inf` when empty).
    pub min: f64,
    /// The largest (`-inf` when empty).
    pub max: f64,
}

impl Summary {
    /// The mean (`NaN` when empty).
    pub fn mean(&self) -> f64 {
        self.sum / self.count as f64
    }
}

/// The accumulator of [`Stats`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StatsAcc {
    count: u64,
    sum_micros: i128,
    min: f64,
    max: f64,
}

impl<V, F> Aggregator<V> for Stats<F>
where
    F: Fn(&V) -> f64 + Clone + 'static,
{
    type Acc = StatsAcc;
    type Out = Summary;
    fn init(&self) -> StatsAcc {
        StatsAcc { count: 0, sum_micros: 0, min: f64::INFINITY, max: f64::NEG_INFINITY }
    }
    #[inline]
    fn add(&self, acc: &mut StatsAcc, value: &V) {
        let x = (self.0)(value);
        acc.count += 1;
        acc.sum_micros += to_micros(x);
        acc.min = acc.min.min(x);
        acc.max = acc.max.max(x);
    }
    fn merge(&self, acc: &mut StatsAcc, other: StatsAcc) {
        acc.count += other.count;
        acc.sum_micros += other.sum_micros;
        acc.min = acc.min.min(other.min);
        acc.max = acc.max.max(other.max);
    }
    fn finish(&self, acc: &StatsAcc) -> Summary {
        Summary { count: acc.count, sum: from_micros(acc.sum_micros), min: acc.min, max: acc.max }
    }
}

/// Two aggregations side by side.
impl<V, A: Aggregator<V>, B: Aggregator<V>> Aggregator<V> for (A, B) {
    type Acc = (A::Acc, B::Acc);
    type Out = (A::Out, B::Out);
    fn init(&self) -> Self::Acc {
        (self.0.init(), self.1.init())
    }
    #[inline]
    fn add(&self, acc: &mut Self::Acc, value: &V) {
        self.0.add(&mut acc.0, value);
        self.1.add(&mut acc.1, value);
    }
    fn merge(&self, acc: &mut Self::Acc, other: Self::Acc) {
        self.0.merge(&mut acc.0, other.0);
        self.1.merge(&mut acc.1, other.1);
    }
    fn finish(&self, acc: &Self::Acc) -> Self::Out {
        (self.0.finish(&acc.0), self.1.finish(&acc.1))
    }
}

/// An aggregator applied to a field of the record instead of the record.
pub struct On<F, A, T> {
    field: F,
    inner: A,
    marker: PhantomData<fn(&T)>,
}

impl<F: Clone, A: Clone, T> Clone for On<F, A, T> {
    fn clone(&self) -> Self {
        On { field: self.field.clone(), inner: self.inner.clone(), marker: PhantomData }
    }
}

impl<F, A, T> On<F, A, T> {
    /// Applies `inner` to `field(&record)`.
    pub fn new(field: F, inner: A) -> Self {
        On { field, inner, marker: PhantomData }
    }
}

impl<V, T: 'static, F, A> Aggregator<V> for On<F, A, T>
where
    F: Fn(&V) -> T + Clone + 'static,
    A: Aggregator<T>,
{
    type Acc = A::Acc;
    type Out = A::Out;
    fn init(&self) -> A::Acc {
        self.inner.init()
    }
    #[inline]
    fn add(&self, acc: &mut A::Acc, value: &V) {
        self.inner.add(acc, &(self.field)(value));
    }
    fn merge(&self, acc: &mut A::Acc, other: A::Acc) {
        self.inner.merge(acc, other);
    }
    fn finish(&self, acc: &A::Acc) -> A::Out {
        self.inner.finish(acc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    struct R {
        t: u64,
        x: i64,
    }
    impl Timestamped for R {
        fn event_time(&self) -> u64 {
            self.t
        }
    }

    fn fold<A: Aggregator<R>>(agg: &A, rs: &[R]) -> A::Acc {
        let mut acc = agg.init();
        for r in rs {
            agg.add(&mut acc, r);
        }
        acc
    }

    /// Folding in two halves and merging equals folding everything: the two-phase property.
    fn split_merge_agrees<A>(agg: A, rs: &[R], cut: usize)
    where
        A: Aggregator<R>,
        A::Out: PartialEq + std::fmt::Debug,
    {
        let cut = cut.min(rs.len());
        let mut left = fold(&agg, &rs[..cut]);
        agg.merge(&mut left, fold(&agg, &rs[cut..]));
        // Compared as text so that NaN (the mean of nothing) equals itself.
        let (merged, whole) = (agg.finish(&left), agg.finish(&fold(&agg, rs)));
        assert_eq!(format!("{merged:?}"), format!("{whole:?}"));
    }

    proptest! {
        #[test]
        fn merge_agrees_with_add(
            rs in prop::collection::vec((0u64..50, -100i64..100).prop_map(|(t, x)| R { t, x }), 0..40),
            cut in 0usize..40,
        ) {
            split_merge_agrees(Count, &rs, cut);
            split_merge_agrees(Sum(|r: &R| r.x), &rs, cut);
            split_merge_agrees(Min(|r: &R| r.x), &rs, cut);
            split_merge_agrees(Max(|r: &R| r.x), &rs, cut);
            split_merge_agrees(First(|r: &R| r.x), &rs, cut);
            split_merge_agrees(Last(|r: &R| r.x), &rs, cut);
            split_merge_agrees((Count, Sum(|r: &R| r.x)), &rs, cut);
            split_merge_agrees(On::new(|r: &R| r.x * 2, Sum(|x: &i64| *x)), &rs, cut);
            split_merge_agrees(Mean(|r: &R| r.x as f64 * 0.01), &rs, cut);
            split_merge_agrees(Stats(|r: &R| r.x as f64 * 0.37), &rs, cut);
        }
    }

    #[test]
    fn built_ins_compute_what_they_say() {
        fn result<A: Aggregator<R>>(agg: A, rs: &[R]) -> A::Out {
            agg.finish(&fold(&agg, rs))
        }
        let rs = [R { t: 5, x: 3 }, R { t: 1, x: 7 }, R { t: 9, x: -2 }, R { t: 1, x: 4 }];
        assert_eq!(result(Count, &rs), 4);
        assert_eq!(result(Min(|r: &R| r.x), &rs), Some(-2));
        assert_eq!(result(Max(|r: &R| r.x), &rs), Some(7));
        assert_eq!(result(First(|r: &R| r.x), &rs), Some(4));
        assert_eq!(result(Last(|r: &R| r.x), &rs), Some(-2));
        let s = result(Stats(|r: &R| r.x as f64), &rs);
        assert_eq!((s.count, s.sum, s.min, s.max, s.mean()), (4, 12.0, -2.0, 7.0, 3.0));
        assert_eq!(result(Mean(|r: &R| r.x as f64), &rs), 3.0);
        assert!(result(Mean(|r: &R| r.x as f64), &[]).is_nan());
        // Exact summation: 0.1 + 0.2 is 0.3 here, in any order.
        let tenths =
            result(Stats(|r: &R| r.x as f64 / 10.0), &[R { t: 0, x: 1 }, R { t: 0, x: 2 }]);
        assert_eq!(tenths.sum, 0.3);
    }
}
