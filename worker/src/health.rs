//! A slot's health checks, as pure steps: the sample-ratio check of the logged impressions
//! against the serving probabilities of each published version, and the feedback lag.

use std::collections::{BTreeMap, VecDeque};

use bandit::health::{mismatches, ExposureTally, Mismatch};
use bandit::{EventBatch, Exposure};
use serde::{Deserialize, Serialize};

use crate::snapshot::UNSEEN_SEGMENT;

/// Storage key of the published versions' serving probabilities.
pub const PUBLISHED_KEY: &str = "published_odds";
/// Published versions kept: the edge serves the newest few, and the bridge's batches arrive
/// seconds later; older ones are rarely seen, and their impressions are counted unchecked.
pub const PUBLISHED_KEPT: usize = 64;
/// Most bytes the kept versions may take (about; one storage value): with many segments each
/// version holds a list per segment, and fewer versions are kept.
pub const PUBLISHED_MAX_BYTES: usize = 96 * 1024;
/// Most items a tally keeps (arms, pins, editorial items of the window).
const MAX_TALLIES: usize = 256;

/// Each item's probability of being shown, in one published version and segment.
pub type ServingOdds = Vec<(String, f64)>;

/// What one published version serves: to visitors without a segment, and in each segment
/// view of the snapshot. Stored as `[version, odds, segments]` (versions stored before
/// segments were checked are `[version, odds]` and still read).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedVersion {
    /// The slot state's version.
    pub version: u64,
    /// What a visitor without a segment view is served.
    pub odds: ServingOdds,
    /// Each segment view's odds (the unseen segments' view among them, when there is one).
    #[serde(default)]
    pub segments: Vec<(String, ServingOdds)>,
}

impl PublishedVersion {
    /// About the JSON bytes it takes.
    fn size(&self) -> usize {
        let list = |o: &ServingOdds| o.iter().map(|(i, _)| i.len() + 28).sum::<usize>() + 2;
        24 + list(&self.odds)
            + self
                .segments
                .iter()
                .map(|(s, o)| s.len() + 6 + list(o))
                .sum::<usize>()
    }

    /// What a visitor in `segment` was served: the segment's view, else the unseen
    /// segments' view, else the arms' own odds (as the edge picks, `Snapshot::view`).
    pub fn odds_in(&self, segment: Option<&str>) -> &[(String, f64)] {
        let view = |name: &str| self.segments.iter().find(|(s, _)| s == name);
        segment
            .and_then(|s| view(s).or_else(|| view(UNSEEN_SEGMENT)))
            .map_or(self.odds.as_slice(), |(_, o)| o.as_slice())
    }
}

/// The serving probabilities of the slot's recently published versions, newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PublishedOdds(VecDeque<PublishedVersion>);

impl PublishedOdds {
    /// Records what a version serves, dropping the oldest beyond [`PUBLISHED_KEPT`] versions
    /// or [`PUBLISHED_MAX_BYTES`] (the newest always stays).
    pub fn push(&mut self, published: PublishedVersion) {
        if self
            .0
            .back()
            .is_some_and(|p| p.version == published.version)
        {
            self.0.pop_back();
        }
        self.0.push_back(published);
        let mut bytes: usize = self.0.iter().map(PublishedVersion::size).sum();
        while self.0.len() > 1 && (self.0.len() > PUBLISHED_KEPT || bytes > PUBLISHED_MAX_BYTES) {
            if let Some(old) = self.0.pop_front() {
                bytes -= old.size();
            }
        }
    }

    /// What `version` served, if it is still kept.
    pub fn get(&self, version: u64) -> Option<&PublishedVersion> {
        self.0.iter().rev().find(|p| p.version == version)
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
        // Per version and segment: the decisions logged, then each item's share of them
        // (an item's tally sums its segments: independent binomials add up). Grouped once, so
        // forged versions or segment names cost linear work, not a pass per group.
        let mut groups: BTreeMap<(u64, Option<&str>), Vec<&Exposure>> = BTreeMap::new();
        for e in &batch.exposures {
            groups
                .entry((e.version, e.segment.as_deref()))
                .or_default()
                .push(e);
        }
        for ((version, segment), exposures) in groups {
            let decisions = exposures
                .iter()
                .fold(0u64, |n, e| n.saturating_add(e.impressions));
            let Some(published) = odds.get(version) else {
                self.unchecked_impressions = self.unchecked_impressions.saturating_add(decisions);
                continue;
            };
            let served = published.odds_in(segment);
            for (item, q) in served {
                // Validated batches hold one entry per version, segment and item.
                let shown = exposures
                    .iter()
                    .find(|e| e.item == *item)
                    .map_or(0, |e| e.impressions);
                self.tally(item).add(decisions, *q, shown);
            }
            // An item the version could not show: all observed, none expected.
            for e in exposures {
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
            segment: None,
        }
    }

    fn version(version: u64, odds: &[(&str, f64)]) -> PublishedVersion {
        PublishedVersion {
            version,
            odds: odds.iter().map(|(i, q)| (i.to_string(), *q)).collect(),
            segments: Vec::new(),
        }
    }

    fn odds() -> PublishedOdds {
        let mut o = PublishedOdds::default();
        o.push(version(7, &[("a", 0.75), ("b", 0.25)]));
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
            o.push(version(v, &[("a", 1.0)]));
        }
        assert!(o.get(35).is_none());
        assert!(o.get(36).is_some() && o.get(99).is_some());
        o.push(version(99, &[("b", 1.0)]));
        assert_eq!(o.get(99).unwrap().odds[0].0, "b");
        // Versions with many segment views are kept by size: fewer, the newest always.
        let big = |v: u64| PublishedVersion {
            segments: (0..25)
                .map(|s| (format!("seg{s}"), version(v, &[("item-x", 0.5); 8]).odds))
                .collect(),
            ..version(v, &[("item-x", 0.5); 8])
        };
        for v in 100..200 {
            o.push(big(v));
        }
        let json = serde_json::to_string(&o).unwrap();
        assert!(json.len() <= PUBLISHED_MAX_BYTES, "{}", json.len());
        assert!(o.get(199).is_some() && o.get(190).is_some() && o.get(100).is_none());
        // Stored before segments were checked: `[version, odds]` pairs still read.
        let old: PublishedOdds = serde_json::from_str(r#"[[3,[["a",0.5],["b",0.5]]]]"#).unwrap();
        assert_eq!(old.get(3).unwrap().odds_in(Some("mobile"))[1].0, "b");
    }

    #[test]
    fn segmented_exposures_are_checked_against_their_segments_odds() {
        // Mobile visitors are served "a" 90% of the time, desktop ones 10%; a segment without
        // a view of its own gets the unseen segments' view.
        let mut o = PublishedOdds::default();
        o.push(PublishedVersion {
            segments: vec![
                ("mobile".into(), version(0, &[("a", 0.9), ("b", 0.1)]).odds),
                ("desktop".into(), version(0, &[("a", 0.1), ("b", 0.9)]).odds),
                (
                    UNSEEN_SEGMENT.into(),
                    version(0, &[("a", 0.5), ("b", 0.5)]).odds,
                ),
            ],
            ..version(5, &[("a", 0.5), ("b", 0.5)])
        });
        let seg = |segment: &str, item: &str, n: u64| Exposure {
            segment: Some(segment.into()),
            ..exposure(5, item, n)
        };
        let honest = EventBatch {
            exposures: vec![
                seg("mobile", "a", 905),
                seg("mobile", "b", 95),
                seg("desktop", "a", 52),
                seg("desktop", "b", 448),
                seg("tablet", "a", 101),
                seg("tablet", "b", 99),
            ],
            ..Default::default()
        };
        let mut h = Health::default();
        h.record(&honest, &o, 0.0);
        assert_eq!(h.tallies["a"].expected, 900.0 + 50.0 + 100.0);
        assert_eq!(h.tallies["a"].observed, 905 + 52 + 101);
        assert!(h.report().mismatches.is_empty(), "{:?}", h.report());
        // Checked against one set of odds for everyone, the same honest traffic would look
        // wrong: each segment's odds matter.
        let mut flat = Health::default();
        flat.record(&honest, &odds_flat(), 0.0);
        assert_eq!(flat.report().mismatches.len(), 2);
        // Desktop visitors all shown "a" (a cached page) is caught.
        let mut h = Health::default();
        let cached = EventBatch {
            exposures: vec![
                seg("mobile", "a", 900),
                seg("mobile", "b", 100),
                seg("desktop", "a", 500),
            ],
            ..Default::default()
        };
        h.record(&cached, &o, 0.0);
        let r = h.report();
        assert!(r.mismatches.iter().any(|m| m.item == "a"), "{r:?}");
    }

    fn odds_flat() -> PublishedOdds {
        let mut o = PublishedOdds::default();
        o.push(version(5, &[("a", 0.5), ("b", 0.5)]));
        o
    }
}
