//! The ingest body and the exactly-once ledger: `serde_json::from_slice::<EventBatch>` and
//! `validate()` on arbitrary bytes, then the same bytes as a structured sequence (via
//! `arbitrary`) of batches and operator corrections against one `OffsetLedger`.
//!
//! Invariants: nothing panics; every parsed batch serialises back to an equal batch; a batch
//! that validates is within every bound; the ledger's disposition agrees with its offsets,
//! `advance` makes an applied batch a duplicate, `len_after` predicts the ledger's size, and
//! the ledger round-trips through JSON.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use bandit::batch::{is_valid_item_id, MAX_COUNT, MAX_ITEM_ID_LEN, MAX_OFFSET, MAX_TOPIC_LEN};
use bandit::{Disposition, EventBatch, ItemCount, OffsetLedger, OffsetRange};
use libfuzzer_sys::fuzz_target;

/// A batch as `arbitrary` builds it: few topics and small offsets so ranges meet the ledger.
#[derive(Debug, Arbitrary)]
struct RawBatch {
    source: String,
    offsets: Vec<(u8, i8, i16, u8)>,
    counts: Vec<(String, u32, u32)>,
    /// Use the item strings as they are (most then fail validation) or map them to ids.
    raw_items: bool,
}

#[derive(Debug, Arbitrary)]
enum Op {
    Batch(RawBatch),
    /// An operator's correction: topic, partition, offset (`None` forgets).
    Set(u8, i8, Option<i16>),
    Forget(u8),
}

const TOPICS: [&str; 4] = ["divolte", "t", "replay-00ff", ""];

fn topic(i: u8) -> String {
    TOPICS[usize::from(i) % TOPICS.len()].to_string()
}

impl RawBatch {
    fn build(&self) -> EventBatch {
        EventBatch {
            source: self.source.clone(),
            offsets: self
                .offsets
                .iter()
                .map(|&(t, p, from, len)| OffsetRange {
                    topic: topic(t),
                    partition: i32::from(p),
                    from: i64::from(from),
                    to: i64::from(from) + i64::from(len),
                })
                .collect(),
            counts: self
                .counts
                .iter()
                .map(|(item, i, c)| ItemCount {
                    item: if self.raw_items {
                        item.clone()
                    } else {
                        let id: String = item
                            .chars()
                            .filter(|c| c.is_ascii_alphanumeric())
                            .take(MAX_ITEM_ID_LEN)
                            .collect();
                        if id.is_empty() {
                            "x".into()
                        } else {
                            id
                        }
                    },
                    impressions: u64::from(*i),
                    clicks: u64::from(*c),
                    served_by: None,
                    segment: None,
                })
                .collect(),
            ..Default::default()
        }
    }
}

/// What `validate` promises, checked independently.
fn check_valid(b: &EventBatch) {
    assert!(!b.offsets.is_empty());
    for r in &b.offsets {
        assert!(!r.topic.is_empty() && r.topic.len() <= MAX_TOPIC_LEN);
        assert!(r.partition >= 0 && 0 <= r.from && r.from <= r.to && r.to <= MAX_OFFSET);
    }
    for c in &b.counts {
        assert!(is_valid_item_id(&c.item));
        assert!(c.item.len() <= MAX_ITEM_ID_LEN);
        assert!(c.impressions <= MAX_COUNT && c.clicks <= MAX_COUNT);
    }
    let mut tps: Vec<_> = b.offsets.iter().map(|r| (&r.topic, r.partition)).collect();
    tps.sort();
    tps.dedup();
    assert_eq!(tps.len(), b.offsets.len(), "no topic-partition twice");
    let mut items: Vec<_> = b.counts.iter().map(|c| &c.item).collect();
    items.sort();
    items.dedup();
    assert_eq!(items.len(), b.counts.len(), "no item twice");
}

fn round_trip(b: &EventBatch) {
    let json = serde_json::to_vec(b).expect("serialise");
    let back: EventBatch = serde_json::from_slice(&json).expect("reparse");
    assert_eq!(&back, b);
}

/// Applies a batch to the ledger as the slot object does, checking the ledger's promises.
fn apply(ledger: &mut OffsetLedger, b: &EventBatch) {
    let valid = b.validate().is_ok();
    let before = ledger.clone();
    let d = ledger.disposition(b);
    let fresh = |r: &OffsetRange| before.get(&r.topic, r.partition).is_none_or(|l| r.from > l);
    // As `disposition` classifies a range: new first, then old.
    let old =
        |r: &OffsetRange| !fresh(r) && before.get(&r.topic, r.partition).is_some_and(|l| r.to <= l);
    match d {
        Disposition::Apply => assert!(b.offsets.iter().all(fresh)),
        Disposition::Duplicate => {
            assert!(!b.offsets.is_empty() && b.offsets.iter().all(old))
        }
        Disposition::Conflict => {
            assert!(!b.offsets.iter().all(fresh) && !b.offsets.iter().all(old))
        }
    }
    // The worker refuses invalid batches before the ledger sees them; only valid ones move it.
    if !valid {
        return;
    }
    let predicted = ledger.len_after(b);
    match d {
        Disposition::Apply => {
            ledger.advance(b);
            assert_eq!(ledger.len(), predicted);
            for r in &b.offsets {
                assert_eq!(ledger.get(&r.topic, r.partition), Some(r.to));
            }
            assert_eq!(ledger.disposition(b), Disposition::Duplicate);
        }
        Disposition::Duplicate => {
            ledger.advance(b);
            assert_eq!(*ledger, before, "a duplicate changes nothing");
        }
        Disposition::Conflict => {}
    }
    assert_eq!(ledger.is_empty(), ledger.len() == 0);
}

fn structured(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(ops) = Vec::<Op>::arbitrary(&mut u) else {
        return;
    };
    let mut ledger = OffsetLedger::default();
    for op in ops.iter().take(64) {
        match op {
            Op::Batch(raw) => {
                let b = raw.build();
                round_trip(&b);
                if b.validate().is_ok() {
                    check_valid(&b);
                }
                apply(&mut ledger, &b);
            }
            Op::Set(t, p, offset) => {
                let (t, p) = (topic(*t), i32::from(*p));
                let prev = ledger.get(&t, p);
                assert_eq!(ledger.set(&t, p, offset.map(i64::from)), prev);
                assert_eq!(ledger.get(&t, p), offset.map(i64::from));
            }
            Op::Forget(t) => {
                let t = topic(*t);
                let n = ledger.applied.get(&t).map_or(0, |p| p.len());
                let len = ledger.len();
                assert_eq!(ledger.forget_topic(&t), n);
                assert_eq!(ledger.len(), len - n);
            }
        }
    }
    let json = serde_json::to_vec(&ledger).expect("serialise ledger");
    let back: OffsetLedger = serde_json::from_slice(&json).expect("reparse ledger");
    assert_eq!(back, ledger);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = serde_json::from_slice::<EventBatch>(data) {
        round_trip(&b);
        if b.validate().is_ok() {
            check_valid(&b);
        }
        let mut ledger = OffsetLedger::default();
        apply(&mut ledger, &b);
        apply(&mut ledger, &b);
    }
    structured(data);
});
