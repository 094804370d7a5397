//! The exactly-once Kafka sink's two-phase commit against Apache Kafka, one writer at a time
//! and in process (the SIGKILL tests of whole jobs are in `runtime_checkpoints.rs`): what a
//! `read_committed` consumer sees after each phase, a restart committing what a crash left
//! prepared, a zombie writer fenced, and a restore after the broker aborted the transaction.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::kafka::{Isolation, Kafka};
use tributary_connectors::kafka::txn::{commit_prepared, Prepared};
use tributary_connectors::kafka::{
    prepared_transactions, Delivery, KafkaSink, KafkaSinkConfig, KafkaWriter,
};
use tributary_runtime::{Error, Sink, SinkContext, SinkWriter};

fn context(worker_index: usize, workers: usize, first_checkpoint: u64) -> SinkContext {
    SinkContext {
        name: "out".into(),
        worker_index,
        workers,
        checkpointed: true,
        job: "job".into(),
        first_checkpoint,
    }
}

/// An exactly-once sink config for `topic`, with transactional ids `<topic>-<worker>-<n>`.
fn config(kafka: &Kafka, topic: &str) -> KafkaSinkConfig {
    let mut config = KafkaSinkConfig::new(kafka.address.clone(), topic);
    config.delivery = Delivery::ExactlyOnce;
    config.transactional_id_prefix = Some(topic.to_owned());
    config
}

fn writer(config: &KafkaSinkConfig, ctx: &SinkContext) -> KafkaWriter<u64> {
    let sink = KafkaSink::new("out", config)
        .expect("sink")
        .keyed(|r: &u64| Some(r.to_be_bytes().to_vec()));
    sink.writer(ctx).expect("writer")
}

/// The records of `topic` as `isolation` reads them, sorted.
fn read(kafka: &Kafka, topic: &str, isolation: Isolation) -> Vec<u64> {
    let mut values: Vec<u64> = kafka
        .records(topic, isolation)
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v.expect("a value")).expect("a number"))
        .collect();
    values.sort_unstable();
    values
}

fn committed(kafka: &Kafka, topic: &str) -> Vec<u64> {
    read(kafka, topic, Isolation::ReadCommitted)
}

fn prepared(state: &[u8]) -> Vec<Prepared> {
    prepared_transactions(state).expect("a sink state")
}

#[test]
fn each_checkpoint_is_a_transaction_that_readers_see_once_it_is_committed() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("phases", 2);
    let mut w = writer(&config(kafka, &topic), &context(0, 2, 1));
    w.write(&mut (1..=10).collect()).expect("write");
    let first = prepared(&w.prepare(1).expect("prepare 1"));
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].id, format!("{topic}-0-1"));
    assert!(first[0].producer_id >= 0, "{first:?}");
    // Phase one done: the records are in the topic, but not for read_committed readers.
    assert_eq!(read(kafka, &topic, Isolation::ReadUncommitted), (1..=10).collect::<Vec<_>>());
    assert_eq!(committed(kafka, &topic), Vec::<u64>::new(), "nothing visible before the commit");

    // Records after the cut, before checkpoint 1 is complete: the next transaction.
    w.write(&mut (11..=15).collect()).expect("write");
    w.commit(1).expect("commit 1");
    assert_eq!(committed(kafka, &topic), (1..=10).collect::<Vec<_>>());
    let second = prepared(&w.prepare(2).expect("prepare 2"));
    assert_eq!(second.iter().map(|p| p.id.clone()).collect::<Vec<_>>(), [format!("{topic}-0-2")]);
    w.commit(2).expect("commit 2");
    // A checkpoint without records opens no transaction, and lists none once committed.
    assert!(prepared(&w.prepare(3).expect("prepare 3")).is_empty());
    assert_eq!(committed(kafka, &topic), (1..=15).collect::<Vec<_>>());
}

#[test]
fn a_checkpoint_prepared_before_the_last_commit_lists_both_transactions() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("overlap", 1);
    let mut w = writer(&config(kafka, &topic), &context(0, 1, 4));
    w.write(&mut vec![1]).expect("write");
    w.prepare(4).expect("prepare 4");
    w.write(&mut vec![2]).expect("write");
    let ids: Vec<_> =
        prepared(&w.prepare(5).expect("prepare 5")).into_iter().map(|p| p.id).collect();
    assert_eq!(ids, [format!("{topic}-0-4"), format!("{topic}-0-5")]);
    w.commit(5).expect("commit both");
    assert_eq!(committed(kafka, &topic), [1, 2]);
}

#[test]
fn a_restart_commits_the_transaction_a_crash_left_prepared() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("restart", 2);
    let config = config(kafka, &topic);
    let mut crashed = writer(&config, &context(1, 2, 1));
    crashed.write(&mut (1..=5).collect()).expect("write");
    let state = crashed.prepare(1).expect("prepare");
    // Records after the cut, in the next transaction, which the crash leaves open.
    crashed.write(&mut (6..=7).collect()).expect("write");
    // The process dies before the checkpoint's commit reaches the broker.
    std::mem::forget(crashed);
    assert_eq!(committed(kafka, &topic), Vec::<u64>::new());

    // The coordinator checks the producer id and epoch of an EndTxn: anything but what it
    // gave the transaction is refused.
    let saved = prepared(&state).remove(0);
    let stale = Prepared { epoch: saved.epoch - 1, ..saved.clone() };
    let refused = commit_prepared(&kafka.address, &stale).expect_err("an older epoch is refused");
    assert!(!refused.is_retryable(), "the coordinator's answer stands: {refused}");
    let refused = refused.to_string();
    assert!(refused.contains(&saved.id), "{refused}");
    let unknown = Prepared { producer_id: saved.producer_id + 1000, ..saved.clone() };
    assert!(commit_prepared(&kafka.address, &unknown).is_err(), "another producer id");

    // Rescaled to one worker, which takes over worker 1's transactions: it commits the
    // prepared one and aborts the one left open.
    let mut restarted = writer(&config, &context(0, 1, 2));
    restarted.restore(vec![Vec::new(), state.clone()]).expect("restore commits it");
    restarted.write(&mut vec![8]).expect("write");
    restarted.prepare(2).expect("prepare 2");
    restarted.commit(2).expect("commit 2");
    assert_eq!(committed(kafka, &topic), [1, 2, 3, 4, 5, 8]);
    assert_eq!(read(kafka, &topic, Isolation::ReadUncommitted), [1, 2, 3, 4, 5, 6, 7, 8]);

    // Restoring the same checkpoint again (a second crash before the next checkpoint)
    // commits its transaction again, which Kafka accepts.
    let mut again = writer(&config, &context(0, 1, 2));
    again.restore(vec![Vec::new(), state]).expect("a committed transaction commits again");
    assert_eq!(committed(kafka, &topic), [1, 2, 3, 4, 5, 8]);
}

#[test]
fn a_zombie_writer_is_fenced_by_the_restarted_one() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("zombie", 1);
    let config = config(kafka, &topic);
    let mut zombie = writer(&config, &context(0, 1, 1));
    zombie.write(&mut (1..=5).collect()).expect("write");
    let state = zombie.prepare(1).expect("prepare");
    zombie.write(&mut (6..=7).collect()).expect("write into the next transaction");

    // The job is restarted from checkpoint 1 while the old writer still runs (a process
    // that hung rather than died): the new writer commits checkpoint 1 and fences the
    // transactional ids the old one may still use.
    let mut restarted = writer(&config, &context(0, 1, 2));
    restarted.restore(vec![state]).expect("restore");
    restarted.write(&mut vec![100, 101]).expect("write");
    restarted.prepare(2).expect("prepare 2");
    restarted.commit(2).expect("commit 2");

    // The old writer wakes up: its commit of checkpoint 1 is a repeat, but whatever it wrote
    // after that is refused, and so its checkpoint 2 fails (and with it the old job).
    zombie.commit(1).expect("checkpoint 1 was committed already");
    let _ = zombie.write(&mut vec![8]);
    let fenced = match zombie.prepare(2) {
        Err(error @ Error::Sink { .. }) => {
            assert!(!error.is_retryable(), "a fenced producer must not be retried: {error}");
            error.to_string()
        }
        other => panic!("the zombie's checkpoint must fail, got {:?}", other.map(|_| ())),
    };
    assert!(fenced.to_lowercase().contains("fenced"), "{fenced}");
    assert_eq!(committed(kafka, &topic), [1, 2, 3, 4, 5, 100, 101]);
}

#[test]
fn a_restore_after_the_broker_aborted_the_transaction_names_the_timeout() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("timeout", 1);
    let mut config = config(kafka, &topic);
    // The broker aborts a transaction open for longer than this (it checks every second).
    config.properties = BTreeMap::from([("transaction.timeout.ms".into(), "2000".into())]);
    let mut crashed = writer(&config, &context(0, 1, 1));
    crashed.write(&mut (1..=3).collect()).expect("write");
    let state = crashed.prepare(1).expect("prepare");
    drop(crashed);
    // The job stays down until the broker has aborted the transaction: no transaction is
    // open in the topic any more, and nothing was committed.
    support::wait_for("the broker to abort the transaction", Duration::from_secs(30), || {
        kafka.stable(&topic).then_some(())
    });
    assert_eq!(committed(kafka, &topic), Vec::<u64>::new());

    let mut restarted = writer(&config, &context(0, 1, 2));
    let error = restarted.restore(vec![state]).expect_err("the restore fails").to_string();
    assert!(
        error.contains(&format!("{topic}-0-1")) && error.contains("transaction.timeout.ms"),
        "{error}"
    );
    assert!(error.contains("output of the checkpoint is lost"), "{error}");
}

#[test]
fn exactly_once_needs_checkpoints_and_owns_the_transactional_id() {
    let kafka = Kafka::shared();
    let topic = kafka.topic("settings", 1);
    let sink = KafkaSink::<u64>::new("out", &config(kafka, &topic)).expect("sink");
    let unchecked = SinkContext { checkpointed: false, ..context(0, 1, 0) };
    match sink.writer(&unchecked) {
        Err(Error::Config(e)) => assert!(e.to_string().contains("delivery"), "{e}"),
        other => panic!("expected a config error, got {:?}", other.err()),
    }
    let mut config = config(kafka, &topic);
    config.properties = BTreeMap::from([("transactional.id".into(), "mine".into())]);
    let e = KafkaSink::<u64>::new("out", &config).err().expect("refused");
    assert!(e.to_string().contains("properties.transactional.id"), "{e}");
}
