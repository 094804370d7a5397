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

/// One key's accumulator in a checkpoint, with the revision of its next result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedKey<K, Acc> {
    pub(crate) key: K,
    pub(crate) acc: Acc,
    pub(crate) revision: u32,
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

/// An exact quantile of a field by nearest rank: the smallest value with at least `q × n` of
/// the `n` values at or below it, as SQL's `percentile_disc` (DuckDB's `quantile_disc`);
/// `None` when empty. Exact, hence it keeps every value of a key's window: memory grows with
/// the records per key and window (a one-minute window of a 10 Hz sensor keeps 600 floats).
#[derive(Clone)]
pub struct Quantile<F> {
    q: f64,
    field: F,
}

impl<F> Quantile<F> {
    /// The `q`-quantile of `field`, e.g. `Quantile::new(0.95, |r| r.value)` for the p95.
    ///
    /// # Panics
    /// If `q` is not within `0..=1`.
    pub fn new(q: f64, field: F) -> Self {
        assert!((0.0..=1.0).contains(&q), "a quantile must be within 0..=1, not {q}");
        Quantile { q, field }
    }

    /// The 1-based nearest rank of the quantile among `n` values: `ceil(q × n)`, at least 1,
    /// with `q × n` that lies within rounding error of an integer taken as that integer.
    fn rank(&self, n: usize) -> usize {
        let x = self.q * n as f64;
        let rank = if (x - x.round()).abs() < 1e-9 { x.round() } else { x.ceil() };
        (rank as usize).clamp(1, n)
    }
}

impl<V, F> Aggregator<V> for Quantile<F>
where
    F: Fn(&V) -> f64 + Clone + 'static,
{
    type Acc = Vec<f64>;
    type Out = Option<f64>;
    fn init(&self) -> Vec<f64> {
        Vec::new()
    }
    #[inline]
    fn add(&self, acc: &mut Vec<f64>, value: &V) {
        acc.push((self.field)(value));
    }
    fn merge(&self, acc: &mut Vec<f64>, mut other: Vec<f64>) {
        acc.append(&mut other);
    }
    fn finish(&self, acc: &Vec<f64>) -> Option<f64> {
        if acc.is_empty() {
            return None;
        }
        let mut values = acc.clone();
        let rank = self.rank(values.len());
        let (_, nth, _) = values.select_nth_unstable_by(rank - 1, f64::total_cmp);
        Some(*nth)
    }
}

/// Count, mean and (population) standard deviation of a field, from sums kept exactly in
/// millionths, so the result does not depend on the order of additions or the number of
/// workers.
#[derive(Clone)]
pub struct Moments<F>(pub F);

/// The result of [`Moments`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MomentsOut {
    /// Number of values.
    pub count: u64,
    /// Their mean (`NaN` when empty).
    pub mean: f64,
    /// Their population standard deviation, `sqrt(Σ(x − mean)² / n)` (`NaN` when empty).
    pub std: f64,
}

/// The accumulator of [`Moments`]: the count, the sum and the sum of squares in millionths.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct MomentsAcc {
    count: u64,
    sum: i128,
    sum_sq: i128,
}

impl<V, F> Aggregator<V> for Moments<F>
where
    F: Fn(&V) -> f64 + Clone + 'static,
{
    type Acc = MomentsAcc;
    type Out = MomentsOut;
    fn init(&self) -> MomentsAcc {
        MomentsAcc::default()
    }
    #[inline]
    fn add(&self, acc: &mut MomentsAcc, value: &V) {
        let x = to_micros((self.0)(value));
        acc.count += 1;
        acc.sum += x;
        acc.sum_sq = acc.sum_sq.saturating_add(x.saturating_mul(x));
    }
    fn merge(&self, acc: &mut MomentsAcc, other: MomentsAcc) {
        acc.count += other.count;
        acc.sum += other.sum;
        acc.sum_sq = acc.sum_sq.saturating_add(other.sum_sq);
    }
    fn finish(&self, acc: &MomentsAcc) -> MomentsOut {
        let n = acc.count as i128;
        if n == 0 {
            return MomentsOut { count: 0, mean: f64::NAN, std: f64::NAN };
        }
        // n²·variance = n·Σx² − (Σx)², exact while it fits in an i128 (values below ~10⁸
        // over a million records), else in floating point.
        let spread = n
            .checked_mul(acc.sum_sq)
            .zip(acc.sum.checked_mul(acc.sum))
            .and_then(|(a, b)| a.checked_sub(b))
            .map_or_else(
                || n as f64 * acc.sum_sq as f64 - (acc.sum as f64).powi(2),
                |exact| exact as f64,
            );
        MomentsOut {
            count: acc.count,
            mean: from_micros(acc.sum) / acc.count as f64,
            std: spread.max(0.0).sqrt() / (n as f64 * SCALE),
        }
    }
}

/// The `k` records with the greatest `key`, greatest first; records with equal keys are
/// kept in the order of arrival, so make the key total (e.g. `(score, id)`) for results that
/// do not depend on it.
#[derive(Clone)]
pub struct TopK<F> {
    k: usize,
    key: F,
}

impl<F> TopK<F> {
    /// The `k` records with the greatest `key(record)`.
    pub fn new(k: usize, key: F) -> Self {
        TopK { k, key }
    }
}

impl<V, O, F> Aggregator<V> for TopK<F>
where
    V: Data,
    O: Ord,
    F: Fn(&V) -> O + Clone + 'static,
{
    type Acc = Vec<V>;
    type Out = Vec<V>;
    fn init(&self) -> Vec<V> {
        Vec::new()
    }
    fn add(&self, acc: &mut Vec<V>, value: &V) {
        self.merge(acc, vec![value.clone()]);
    }
    fn merge(&self, acc: &mut Vec<V>, other: Vec<V>) {
        acc.extend(other);
        // Stable: equal keys keep their order.
        acc.sort_by_key(|v| std::cmp::Reverse((self.key)(v)));
        acc.truncate(self.k);
    }
    fn finish(&self, acc: &Vec<V>) -> Vec<V> {
        acc.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
            split_merge_agrees(Quantile::new(0.95, |r: &R| r.x as f64), &rs, cut);
            split_merge_agrees(Moments(|r: &R| r.x as f64 * 0.37), &rs, cut);
            split_merge_agrees(TopK::new(3, |r: &R| (r.x, r.t)), &rs, cut);
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

    proptest! {
        /// The quantile is the nearest-rank one, and the moments and the top k agree with
        /// their textbook formulas.
        #[test]
        fn quantile_moments_and_top_k_agree_with_naive_formulas(
            rs in prop::collection::vec((0u64..50, -100i64..100).prop_map(|(t, x)| R { t, x }), 1..60),
            q in 0.0f64..=1.0,
        ) {
            let mut sorted: Vec<f64> = rs.iter().map(|r| r.x as f64).collect();
            sorted.sort_by(f64::total_cmp);
            let n = sorted.len();
            let quantile = Quantile::new(q, |r: &R| r.x as f64);
            let got = quantile.finish(&fold(&quantile, &rs)).unwrap();
            // The smallest value with at least q·n values at or below it.
            let naive = *sorted
                .iter()
                .find(|v| sorted.iter().filter(|w| w <= v).count() as f64 >= q * n as f64 - 1e-9)
                .unwrap();
            prop_assert_eq!(got, naive);

            let m = Moments(|r: &R| r.x as f64 * 0.01);
            let out = m.finish(&fold(&m, &rs));
            let mean = rs.iter().map(|r| r.x as f64 * 0.01).sum::<f64>() / n as f64;
            let var = rs.iter().map(|r| (r.x as f64 * 0.01 - mean).powi(2)).sum::<f64>() / n as f64;
            prop_assert_eq!(out.count, n as u64);
            prop_assert!((out.mean - mean).abs() < 1e-9 && (out.std - var.sqrt()).abs() < 1e-9);

            let top = TopK::new(3, |r: &R| (r.x, r.t));
            let mut naive: Vec<(i64, u64)> = rs.iter().map(|r| (r.x, r.t)).collect();
            naive.sort_by(|a, b| b.cmp(a));
            naive.truncate(3);
            let got: Vec<(i64, u64)> = top.finish(&fold(&top, &rs)).iter().map(|r| (r.x, r.t)).collect();
            prop_assert_eq!(got, naive);
        }
    }

    #[test]
    fn quantile_matches_duckdb_quantile_disc() {
        // DuckDB: SELECT quantile_disc(x, 0.95) FROM range(1, n + 1) t(x) for these n.
        let p95 = Quantile::new(0.95, |r: &R| r.x as f64);
        for (n, duckdb) in [(1, 1), (2, 2), (10, 10), (20, 19), (21, 20), (40, 38)] {
            let rs: Vec<R> = (1..=n).rev().map(|x| R { t: 0, x }).collect();
            assert_eq!(p95.finish(&fold(&p95, &rs)), Some(duckdb as f64), "n = {n}");
        }
        assert_eq!(p95.finish(&p95.init()), None);
        let m = Moments(|r: &R| r.x as f64);
        let out = m.finish(&fold(&m, &[R { t: 0, x: 2 }, R { t: 0, x: 4 }]));
        assert_eq!((out.count, out.mean, out.std), (2, 3.0, 1.0));
    }
}
