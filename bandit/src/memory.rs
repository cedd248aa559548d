//! What a screening set remembers of the items that left it, so an item drawn again is judged
//! on all its evidence, and a refill takes items already found wanting only rarely.
//!
//! Why: a screening policy retires a fresh arm after a few impressions without a click, so an
//! item truly among the catalog's best is often retired on bad luck, and it comes back after
//! its cool-down with nothing learned. With memory it comes back with its old counts; the
//! screening bar it must clear to be retired again is set against the fresh prior and gets
//! stricter with every stay (see [`Recall::retire_factor`]), so bad items leave at once and
//! good ones get the longer look they need; and a refill draws its candidates by their
//! posteriors ([`Memory::prefer`]), so items found wanting are rarely drawn again.

use std::collections::VecDeque;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Posterior;

/// Most items one set remembers; the oldest forgotten first. Enough for a catalog of 5,000
/// items (a 400,000-impression run retires fewer distinct ones); a larger catalog keeps its
/// most recent retirees. At about 25 bytes an entry the stored memory stays near 100 KB.
pub const MEMORY_CAPACITY: usize = 4096;

/// Candidates a refill draws from the catalog per arm it needs, for [`Memory::prefer`] to
/// choose among.
pub const FRESH_POOL: usize = 8;

/// One remembered item's evidence over its stays in the set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recall {
    /// Clicks over its stays.
    pub clicks: u64,
    /// Impressions over its stays.
    pub impressions: u64,
    /// How many times it has been in the set.
    pub stays: u32,
}

impl Recall {
    /// This evidence added to `prior`.
    pub fn posterior(&self, prior: Posterior) -> Posterior {
        prior.observe(self.clicks, self.impressions)
    }

    /// The factor by which the evidence must cut a returning arm's chance of beating the
    /// screening bar, measured from the fresh prior, before it is retired again: `eps` to the
    /// power stays + 1. A second stay needs the drop of two first stays, and so on, so an
    /// item is never condemned forever by a few unlucky impressions, while one already
    /// clearly behind leaves at once.
    pub fn retire_factor(&self, eps: f64) -> f64 {
        eps.powi(self.stays.saturating_add(1).min(64) as i32)
    }

    /// This recall after one more stay with `clicks` of `impressions`.
    fn after(self, clicks: u64, impressions: u64) -> Recall {
        Recall {
            clicks: self.clicks.saturating_add(clicks.min(impressions)),
            impressions: self.impressions.saturating_add(impressions),
            stays: self.stays.saturating_add(1),
        }
    }
}

/// A bounded memory of past arms' evidence by item, oldest first. Stored as a list of
/// `[item, clicks, impressions, stays]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(
    from = "Vec<(String, u64, u64, u32)>",
    into = "Vec<(String, u64, u64, u32)>"
)]
pub struct Memory {
    entries: VecDeque<(String, Recall)>,
    /// Changes since the set was made or loaded, so a store can skip writing an unchanged
    /// memory (not stored; equality ignores it).
    changes: u64,
}

impl PartialEq for Memory {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl From<Vec<(String, u64, u64, u32)>> for Memory {
    fn from(list: Vec<(String, u64, u64, u32)>) -> Memory {
        let skip = list.len().saturating_sub(MEMORY_CAPACITY);
        let entries = list
            .into_iter()
            .skip(skip)
            .map(|(item, clicks, impressions, stays)| {
                let recall = Recall {
                    clicks: clicks.min(impressions),
                    impressions,
                    stays,
                };
                (item, recall)
            })
            .collect();
        Memory {
            entries,
            changes: 0,
        }
    }
}

impl From<Memory> for Vec<(String, u64, u64, u32)> {
    fn from(m: Memory) -> Self {
        m.entries
            .into_iter()
            .map(|(i, r)| (i, r.clicks, r.impressions, r.stays))
            .collect()
    }
}

impl Memory {
    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many items are remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Changes since the memory was made or loaded (a store compares it to skip writes).
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// The remembered items, newest first.
    pub fn newest(&self) -> impl Iterator<Item = (&str, Recall)> {
        self.entries.iter().rev().map(|(i, r)| (i.as_str(), *r))
    }

    /// What is remembered of `item`.
    pub fn get(&self, item: &str) -> Option<Recall> {
        self.entries
            .iter()
            .find(|(i, _)| i == item)
            .map(|&(_, r)| r)
    }

    /// Records that `item` left the set after a stay with `clicks` of `impressions`, on top
    /// of `before` (what it came back with, if anything). It becomes the newest entry. A stay
    /// without impressions teaches nothing: it is not counted, and an item that had nothing
    /// remembered stays unremembered (a feature prior, say, may retire an item before it is
    /// shown, and that must not count against it later).
    pub fn remember(&mut self, item: &str, before: Option<Recall>, clicks: u64, impressions: u64) {
        self.forget(item);
        let recall = match (before, impressions) {
            (None, 0) => return,
            (Some(b), 0) => b,
            (b, _) => b.unwrap_or_default().after(clicks, impressions),
        };
        if self.entries.len() >= MEMORY_CAPACITY {
            self.entries.pop_front();
        }
        self.entries.push_back((item.to_string(), recall));
        self.changes += 1;
    }

    /// Takes `item` out of the memory (it re-enters the set) and returns what was known.
    pub fn take(&mut self, item: &str) -> Option<Recall> {
        let at = self.entries.iter().position(|(i, _)| i == item)?;
        self.changes += 1;
        self.entries.remove(at).map(|(_, r)| r)
    }

    fn forget(&mut self, item: &str) {
        if let Some(at) = self.entries.iter().position(|(i, _)| i == item) {
            self.entries.remove(at);
        }
    }

    /// Orders fresh candidates for a refill by one posterior draw each, highest first
    /// (Thompson sampling among them): an item never remembered draws from `prior`, a
    /// remembered one from `prior` plus its evidence. So a clear loser is rarely taken again,
    /// while an item retired after a few unlucky impressions, its posterior still close to
    /// the prior, competes with unseen items on almost equal terms. Returns indices into
    /// `candidates`.
    pub fn prefer<R: Rng + ?Sized>(
        &self,
        candidates: &[&str],
        prior: Posterior,
        rng: &mut R,
    ) -> Vec<usize> {
        let mut scored: Vec<(f64, usize)> = candidates
            .iter()
            .enumerate()
            .map(|(k, item)| {
                let p = self.get(item).map_or(prior, |r| r.posterior(prior));
                (p.sample(rng), k)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().map(|(_, k)| k).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn remembering_accumulates_stays_and_is_bounded() {
        let mut m = Memory::default();
        m.remember("a", None, 1, 10);
        let a = m.take("a").expect("remembered");
        assert_eq!((a.clicks, a.impressions, a.stays), (1, 10, 1));
        assert!(m.get("a").is_none(), "taken out while in the set");
        m.remember("a", Some(a), 2, 5);
        assert_eq!(
            m.get("a"),
            Some(Recall {
                clicks: 3,
                impressions: 15,
                stays: 2
            })
        );
        // A stay without impressions teaches nothing.
        m.remember("z", None, 0, 0);
        assert!(m.get("z").is_none());
        m.remember("a", m.get("a"), 0, 0);
        assert_eq!(m.get("a").map(|r| r.stays), Some(2));
        // Forged counts never give more clicks than impressions.
        m.remember("b", None, 9, 3);
        assert_eq!(m.get("b").map(|r| r.clicks), Some(3));
        for i in 0..MEMORY_CAPACITY {
            m.remember(&format!("x{i}"), None, 0, 1);
        }
        assert_eq!(m.len(), MEMORY_CAPACITY);
        assert!(
            m.get("a").is_none() && m.get("b").is_none(),
            "oldest forgotten"
        );
        assert!(m.get("x0").is_some());
    }

    #[test]
    fn stored_memory_reads_back_and_an_oversized_list_keeps_its_newest() {
        let mut m = Memory::default();
        m.remember("a", None, 1, 10);
        m.remember("b", None, 0, 4);
        let json = serde_json::to_string(&m).expect("serialises");
        assert_eq!(json, r#"[["a",1,10,1],["b",0,4,1]]"#);
        let back: Memory = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, m);
        assert_eq!(back.changes(), 0);
        let long: Vec<(String, u64, u64, u32)> = (0..MEMORY_CAPACITY + 5)
            .map(|i| (format!("i{i}"), 0, 1, 1))
            .collect();
        let m = Memory::from(long);
        assert_eq!(m.len(), MEMORY_CAPACITY);
        assert!(m.get("i4").is_none() && m.get("i5").is_some());
    }

    #[test]
    fn the_retire_factor_tightens_with_every_stay() {
        let r = |stays| Recall {
            stays,
            ..Recall::default()
        };
        assert_eq!(r(0).retire_factor(0.5), 0.5);
        assert_eq!(r(1).retire_factor(0.5), 0.25);
        assert_eq!(r(3).retire_factor(0.5), 0.0625);
        assert!(r(u32::MAX).retire_factor(0.85) > 0.0);
    }

    #[test]
    fn refills_take_candidates_as_often_as_their_draw_wins() {
        let mut m = Memory::default();
        let prior = Posterior {
            alpha: 2.0,
            beta: 58.0,
        };
        m.remember("good", None, 3, 20);
        m.remember("poor", None, 0, 100);
        let mut rng = SmallRng::seed_from_u64(7);
        let order = m.prefer(&["good", "new", "poor"], prior, &mut rng);
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, vec![0, 1, 2], "a permutation");
        // Each pair comes first as often as its draw wins: P(X > Y) for the two posteriors,
        // estimated by independent draws, against the ordering's frequency, within 4 binomial
        // standard deviations of each estimate (so 4 * sqrt(2) for the difference).
        let n = 20_000;
        let mut check = SmallRng::seed_from_u64(8);
        let new = prior;
        let cases = [
            ("good", prior.observe(3, 20), "poor", prior.observe(0, 100)),
            ("new", new, "poor", prior.observe(0, 100)),
            ("good", prior.observe(3, 20), "new", new),
        ];
        for (a, pa, b, pb) in cases {
            let expected = (0..n)
                .filter(|_| pa.sample(&mut check) > pb.sample(&mut check))
                .count() as f64
                / n as f64;
            let first = (0..n)
                .filter(|_| m.prefer(&[b, a], prior, &mut rng)[0] == 1)
                .count() as f64
                / n as f64;
            let sd = (expected * (1.0 - expected) / n as f64)
                .sqrt()
                .max(1.0 / n as f64);
            assert!(
                (first - expected).abs() < 4.0 * sd * 2f64.sqrt(),
                "{a} before {b}: {first}, expected {expected}"
            );
        }
    }
}
