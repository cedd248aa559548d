//! A slot's health checks, as pure steps: the sample-ratio check of the logged impressions
//! against the serving probabilities of each published version, and the feedback lag.

use std::collections::{BTreeMap, VecDeque};

use bandit::health::{mismatches, ExposureTally, Mismatch};
use bandit::EventBatch;
use serde::{Deserialize, Serialize};

/// Storage key of the published versions' serving probabilities.
pub const PUBLISHED_KEY: &str = "published_odds";
/// Published versions kept: the edge serves the newest few, and the bridge's batches arrive
/// seconds later; older ones are rarely seen, and their impressions are counted unchecked.
pub const PUBLISHED_KEPT: usize = 64;
/// Most items a tally keeps (arms, pins, editorial items of the window).
const MAX_TALLIES: usize = 256;

/// The serving probabilities of the slot's recently published versions, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedOdds(VecDeque<(u64, Vec<(String, f64)>)>);

impl PublishedOdds {
    /// Records what `version` serves, dropping the oldest beyond [`PUBLISHED_KEPT`].
    pub fn push(&mut self, version: u64, odds: Vec<(String, f64)>) {
        if self.0.back().is_some_and(|(v, _)| *v == version) {
            self.0.pop_back();
        }
        self.0.push_back((version, odds));
        while self.0.len() > PUBLISHED_KEPT {
            self.0.pop_front();
        }
    }

    /// What `version` served, if it is still kept.
    pub fn get(&self, version: u64) -> Option<&[(String, f64)]> {
        self.0
            .iter()
            .rev()
            .find(|(v, _)| *v == version)
            .map(|(_, o)| o.as_slice())
    }
}

/// The last batch's feedback lag: how long its events took from the collector to the slot.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeedbackLag {
    /// Lag of its oldest event, ms.
    pub oldest_ms: f64,
    /// Lag of its newest event, ms.
    pub newest_ms: f64,
    /// When it was applied (ms since the Unix epoch).
    pub at_ms: f64,
}

/// A slot's health record.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Health {
    /// Logged impressions against expectations, per item, this round.
    pub tallies: BTreeMap<String, ExposureTally>,
    /// The same for the last finished round.
    pub previous: BTreeMap<String, ExposureTally>,
    /// Logged impressions of versions no longer kept (not checked).
    pub unchecked_impressions: u64,
    /// The last batch's feedback lag.
    pub feedback: Option<FeedbackLag>,
}

/// What the dashboard and the state API show.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// Which round's tallies: `this round` or `last round` (when this one has too little).
    pub window: &'static str,
    /// Items with enough evidence to test.
    pub tested: usize,
    /// Items whose impressions do not match their logged probabilities.
    pub mismatches: Vec<Mismatch>,
    /// Logged impressions of versions no longer kept.
    pub unchecked_impressions: u64,
    /// The last batch's feedback lag.
    pub feedback: Option<FeedbackLag>,
}

impl Health {
    /// Accounts an applied batch: its exposures against the published odds of their
    /// versions, and its feedback lag at `now_ms`.
    pub fn record(&mut self, batch: &EventBatch, odds: &PublishedOdds, now_ms: f64) {
        if let Some(t) = batch.event_time {
            self.feedback = Some(FeedbackLag {
                oldest_ms: (now_ms - t.oldest_ms as f64).max(0.0),
                newest_ms: (now_ms - t.newest_ms as f64).max(0.0),
                at_ms: now_ms,
            });
        }
        // Per version: the decisions logged, then each item's share of them.
        let mut versions: BTreeMap<u64, u64> = BTreeMap::new();
        for e in &batch.exposures {
            *versions.entry(e.version).or_default() += e.impressions;
        }
        for (version, decisions) in versions {
            let Some(served) = odds.get(version) else {
                self.unchecked_impressions = self.unchecked_impressions.saturating_add(decisions);
                continue;
            };
            let shown = |item: &str| {
                batch
                    .exposures
                    .iter()
                    .filter(|e| e.version == version && e.item == item)
                    .map(|e| e.impressions)
                    .sum::<u64>()
            };
            for (item, q) in served {
                self.tally(item).add(decisions, *q, shown(item));
            }
            // An item the version could not show: all observed, none expected.
            for e in batch.exposures.iter().filter(|e| e.version == version) {
                if !served.iter().any(|(i, _)| *i == e.item) {
                    self.tally(&e.item).add(decisions, 0.0, e.impressions);
                }
            }
        }
    }

    fn tally(&mut self, item: &str) -> &mut ExposureTally {
        if !self.tallies.contains_key(item) && self.tallies.len() >= MAX_TALLIES {
            // Bounded: the smallest evidence goes first.
            if let Some(k) = self
                .tallies
                .iter()
                .min_by(|a, b| a.1.expected.total_cmp(&b.1.expected))
                .map(|(k, _)| k.clone())
            {
                self.tallies.remove(&k);
            }
        }
        self.tallies.entry(item.to_string()).or_default()
    }

    /// A round ended: its tallies become the last round's.
    pub fn end_round(&mut self) {
        self.previous = std::mem::take(&mut self.tallies);
    }

    /// The check of this round, or of the last one while this one has too little evidence.
    pub fn report(&self) -> HealthReport {
        let tested = |t: &BTreeMap<String, ExposureTally>| {
            t.values()
                .filter(|x| x.expected >= bandit::health::MIN_EXPECTED)
                .count()
        };
        let (window, tallies) = if tested(&self.tallies) == 0 && tested(&self.previous) > 0 {
            ("last round", &self.previous)
        } else {
            ("this round", &self.tallies)
        };
        HealthReport {
            window,
            tested: tested(tallies),
            mismatches: mismatches(tallies.iter().map(|(k, v)| (k.as_str(), v))),
            unchecked_impressions: self.unchecked_impressions,
            feedback: self.feedback,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bandit::{EventTime, Exposure};

    fn exposure(version: u64, item: &str, impressions: u64) -> Exposure {
        Exposure {
            version,
            item: item.into(),
            impressions,
        }
    }

    fn odds() -> PublishedOdds {
        let mut o = PublishedOdds::default();
        o.push(7, vec![("a".into(), 0.75), ("b".into(), 0.25)]);
        o
    }

    #[test]
    fn exposures_are_checked_against_their_versions_odds() {
        let mut h = Health::default();
        let batch = EventBatch {
            exposures: vec![
                exposure(7, "a", 70),
                exposure(7, "b", 30),
                exposure(3, "a", 9),
            ],
            event_time: Some(EventTime {
                oldest_ms: 1_000,
                newest_ms: 4_000,
            }),
            ..Default::default()
        };
        h.record(&batch, &odds(), 5_000.0);
        assert_eq!(h.tallies["a"].observed, 70);
        assert_eq!(h.tallies["a"].expected, 75.0);
        assert_eq!(h.tallies["b"].expected, 25.0);
        assert_eq!(h.unchecked_impressions, 9, "version 3 is not kept");
        let lag = h.feedback.unwrap();
        assert_eq!((lag.oldest_ms, lag.newest_ms), (4_000.0, 1_000.0));
        let r = h.report();
        assert_eq!((r.tested, r.window), (2, "this round"));
        assert!(r.mismatches.is_empty(), "{:?}", r.mismatches);
        // A cached page shows "b" 300 more times under the same decision.
        let cached = EventBatch {
            exposures: vec![exposure(7, "b", 300)],
            ..Default::default()
        };
        h.record(&cached, &odds(), 6_000.0);
        let r = h.report();
        assert_eq!(r.mismatches.len(), 2, "{:?}", r.mismatches);
        let b = r.mismatches.iter().find(|m| m.item == "b").unwrap();
        assert!(b.observed > b.expected as u64 && b.reason.contains("cache"));
        // After the round ends, the last round's verdict stands until this one has evidence.
        h.end_round();
        assert_eq!(h.report().window, "last round");
        assert_eq!(h.report().mismatches.len(), 2);
    }

    #[test]
    fn the_ring_keeps_the_newest_versions() {
        let mut o = PublishedOdds::default();
        for v in 0..100 {
            o.push(v, vec![("a".into(), 1.0)]);
        }
        assert!(o.get(35).is_none());
        assert!(o.get(36).is_some() && o.get(99).is_some());
        o.push(99, vec![("b".into(), 1.0)]);
        assert_eq!(o.get(99).unwrap()[0].0, "b");
    }
}
