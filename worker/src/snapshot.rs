//! The read model the edge samples from: the arms of a slot with their posteriors and display
//! fields, published to KV by the slot's Durable Object.

use bandit::decision::{serve_probability, ServedBy};
use bandit::operator::Pin;
use bandit::Posterior;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use std::cell::RefCell;
use std::rc::Rc;

use crate::catalog::CatalogItem;

/// One arm as the edge sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotArm {
    /// Display fields of the item.
    pub item: CatalogItem,
    /// Its current posterior.
    pub posterior: Posterior,
    /// The probability that its draw is the highest (Thompson sampling's chance of showing
    /// it), computed once per version by the Durable Object; 0 in snapshots written before
    /// it existed (see [`Snapshot::ensure_p_best`]).
    #[serde(default)]
    pub p_best: f64,
}

/// Everything needed to pick and render a slot without touching the Durable Object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Slot name.
    pub slot: String,
    /// Round number of the arm set.
    pub epoch: u64,
    /// Applied-batch counter of the slot; grows with every change.
    pub version: u64,
    /// Changes of the arm set so far this round (screening swaps, operator removals and
    /// refills): with the round, it names the exact set a decision chose from.
    #[serde(default, skip_serializing_if = "bandit::is_zero")]
    pub set: u64,
    /// When the Durable Object produced it (ms since the Unix epoch).
    pub produced_at_ms: f64,
    /// The arms.
    pub arms: Vec<SnapshotArm>,
    /// An operator's pin, with what the page shows of its item.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// The arms as each visitor segment sees them (partially pooled posteriors), when the
    /// worker has segments; a segment not listed sees [`UNSEEN_SEGMENT`]'s view if there is
    /// one, else the arms' own posteriors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentView>,
    /// P(best) among the open arms, per view and set of arms an earlier slot of the page took.
    #[serde(skip)]
    conditional: RefCell<Vec<ConditionalPBest>>,
}

/// The view of segments without counts of their own.
pub const UNSEEN_SEGMENT: &str = "*";

/// The arms as one visitor segment sees them, in the snapshot's arm order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentView {
    /// Segment name (or [`UNSEEN_SEGMENT`]).
    pub segment: String,
    /// Each arm's posterior in the segment.
    pub posteriors: Vec<Posterior>,
    /// Each arm's P(best) in the segment.
    pub p_best: Vec<f64>,
}

/// A pin with the display fields of its item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The pin.
    pub pin: Pin,
    /// Display fields of the pinned item.
    pub item: CatalogItem,
}

/// What a request of a snapshot may show and with which probabilities.
struct Odds<'s> {
    snap: &'s Snapshot,
    /// The visitor segment's view, if it has its own.
    view: Option<&'s SegmentView>,
    /// Arms not taken by an earlier slot of the page.
    open: Vec<usize>,
    /// P(best) of each arm among the open ones.
    p_best: Rc<Vec<f64>>,
    /// The pin in force, if not taken.
    pin: Option<&'s Pinned>,
    pin_share: f64,
    holdout: Holdout<'s>,
    /// The holdout's share, 0 when it has nothing to show.
    share: f64,
}

impl<'s> Odds<'s> {
    fn new(
        snap: &'s Snapshot,
        now_ms: f64,
        taken: &[&str],
        holdout: Holdout<'s>,
        segment: Option<&str>,
    ) -> Odds<'s> {
        let view = segment.and_then(|s| snap.view(s));
        let open: Vec<usize> = (0..snap.arms.len())
            .filter(|&i| !taken.contains(&snap.arms[i].item.id.as_str()))
            .collect();
        // P(best) among the open arms: the view's own unless an earlier slot took one of its
        // arms (a page with several slots sharing items), then computed once per snapshot,
        // view and set of taken arms.
        let p_best: Rc<Vec<f64>> = match view {
            _ if open.len() != snap.arms.len() => snap.p_best_without(view, &open),
            Some(v) => Rc::new(v.p_best.clone()),
            None => Rc::new(snap.arms.iter().map(|a| a.p_best).collect()),
        };
        let pin = match &snap.pinned {
            Some(p) if p.pin.active(now_ms) && !taken.contains(&p.item.id.as_str()) => Some(p),
            _ => None,
        };
        let share = match holdout {
            Holdout::Off => 0.0,
            Holdout::Uniform { share } if !open.is_empty() => share,
            Holdout::Fallback { share, item } if !taken.contains(&item) => share,
            _ => 0.0,
        };
        Odds {
            snap,
            view,
            open,
            p_best,
            pin,
            pin_share: pin.map_or(0.0, |p| p.pin.share),
            holdout,
            share,
        }
    }

    /// The probability that the request shows `item`.
    fn of(&self, item: &str) -> f64 {
        let arm = self
            .open
            .iter()
            .find(|&&i| self.snap.arms[i].item.id == item);
        let baseline = match self.holdout {
            Holdout::Uniform { .. } if arm.is_some() => 1.0 / self.open.len() as f64,
            Holdout::Fallback { item: f, .. } if f == item => 1.0,
            _ => 0.0,
        };
        let is_pinned = self.pin.is_some_and(|p| p.item.id == item);
        let p = serve_probability(
            self.pin_share,
            is_pinned,
            self.share,
            baseline,
            arm.map_or(0.0, |&i| self.p_best[i]),
        );
        Drawn::loggable(p)
    }
}

/// P(best) among a set of open arms (by index) in a view (by segment name, empty for the
/// arms' own), for a page whose earlier slots took some.
type ConditionalPBest = (String, Vec<usize>, Rc<Vec<f64>>);

/// The holdout as a decision sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Holdout<'a> {
    /// No holdout.
    Off,
    /// `share` of the decisions show an open arm uniformly.
    Uniform {
        /// Share of decisions.
        share: f64,
    },
    /// `share` of the decisions show the editorial `item` (the configured fallback).
    Fallback {
        /// Share of decisions.
        share: f64,
        /// The editorial item's id.
        item: &'a str,
    },
}

/// What a decision shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    /// The arm at this index.
    Arm(usize),
    /// The snapshot's pinned item.
    Pinned,
    /// The holdout's editorial item (the configured fallback).
    Baseline,
}

/// A decision with its logged probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Drawn {
    /// What is shown.
    pub choice: Choice,
    /// The probability that this request shows that item.
    pub probability: f64,
    /// Who served it.
    pub served_by: ServedBy,
    /// How many arms the decision chose among.
    pub arms: u32,
}

impl Drawn {
    /// A probability fit to log: P(best) by quadrature does not resolve values below about
    /// 1e-9, so a smaller one (an arm far behind that a draw still picked) is logged as that floor,
    /// which keeps an evaluator's weights finite (at most 1e9) instead of near 1/f64::MIN.
    fn loggable(p: f64) -> f64 {
        if p.is_finite() && p > MIN_LOGGED_PROBABILITY {
            p.min(1.0)
        } else {
            MIN_LOGGED_PROBABILITY
        }
    }
}

/// A visitor's sticky key for a slot: a hash of the session id (Divolte's session cookie) and
/// the slot name.
pub fn sticky_key(session: &str, slot: &str) -> u64 {
    mix(stable_hash(session) ^ stable_hash(slot).rotate_left(32))
}

/// FNV-1a: a fixed hash, so keys do not change between isolates or deployments.
fn stable_hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The SplitMix64 finaliser: spreads a key's bits over the whole word.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A uniform number in (0, 1) from 53 bits of `z`.
fn unit(z: u64) -> f64 {
    ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
}

/// The smallest probability a decision logs.
pub const MIN_LOGGED_PROBABILITY: f64 = 1e-9;

/// Most conditional P(best) vectors a snapshot keeps.
const MAX_CONDITIONAL: usize = 16;

/// KV key of a slot's snapshot.
pub fn kv_key(slot: &str) -> String {
    format!("snapshot:{slot}")
}

impl Snapshot {
    /// Whether this snapshot is a later state of the slot than `other` (every change of the
    /// slot raises its version).
    pub fn is_newer_than(&self, other: &Snapshot) -> bool {
        self.version > other.version
    }

    /// A snapshot of these arms with P(best) filled in.
    pub fn new(
        slot: String,
        epoch: u64,
        version: u64,
        produced_at_ms: f64,
        arms: Vec<SnapshotArm>,
        pinned: Option<Pinned>,
    ) -> Snapshot {
        let mut s = Snapshot {
            slot,
            epoch,
            version,
            set: 0,
            produced_at_ms,
            arms,
            pinned,
            segments: Vec::new(),
            conditional: Default::default(),
        };
        s.ensure_p_best();
        s
    }

    /// Fills in P(best) when the snapshot was written without it (by an older version of the
    /// object), so every decision can log its probability.
    pub fn ensure_p_best(&mut self) {
        let sum: f64 = self.arms.iter().map(|a| a.p_best).sum();
        if !self.arms.is_empty() && (sum - 1.0).abs() > 1e-6 {
            let p = bandit::p_best(&self.arms.iter().map(|a| a.posterior).collect::<Vec<_>>());
            for (a, p) in self.arms.iter_mut().zip(p) {
                a.p_best = p;
            }
        }
    }

    /// P(best) of each arm among the `open` ones (0 for the others), computed once per
    /// snapshot and set: at most a handful of sets occur (the picks of earlier slots).
    fn p_best_without(&self, view: Option<&SegmentView>, open: &[usize]) -> Rc<Vec<f64>> {
        let name = view.map_or("", |v| v.segment.as_str());
        if let Some((_, _, p)) = self
            .conditional
            .borrow()
            .iter()
            .find(|(v, o, _)| v == name && o == open)
        {
            return Rc::clone(p);
        }
        let open_p = bandit::p_best(
            &open
                .iter()
                .map(|&i| self.posterior(view, i))
                .collect::<Vec<_>>(),
        );
        let mut p = vec![0.0; self.arms.len()];
        for (&i, q) in open.iter().zip(open_p) {
            p[i] = q;
        }
        let p = Rc::new(p);
        let mut cache = self.conditional.borrow_mut();
        if cache.len() >= MAX_CONDITIONAL {
            cache.remove(0);
        }
        cache.push((name.to_string(), open.to_vec(), Rc::clone(&p)));
        p
    }

    /// The view of `segment`: its own, else the one of segments without counts, if any.
    fn view(&self, segment: &str) -> Option<&SegmentView> {
        self.segments
            .iter()
            .find(|v| v.segment == segment)
            .or_else(|| self.segments.iter().find(|v| v.segment == UNSEEN_SEGMENT))
    }

    /// Arm `i`'s posterior in `view` (its own without one).
    fn posterior(&self, view: Option<&SegmentView>, i: usize) -> Posterior {
        view.and_then(|v| v.posteriors.get(i).copied())
            .unwrap_or(self.arms[i].posterior)
    }

    /// Decides what a request shows, skipping items already `taken` on the page: the pin
    /// when its share draws it, else the holdout's baseline when its share draws it, else the
    /// Thompson winner; with the exact probability of that outcome for this request. With a
    /// `sticky` key (a visitor's session and the slot, see [`sticky_key`]) every draw comes
    /// from that key and the round, so the visitor sees one pick per round (as long as the
    /// posteriors barely move); across visitors the picks keep their logged probabilities.
    #[allow(clippy::too_many_arguments)]
    pub fn decide<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_ms: f64,
        taken: &[&str],
        holdout: Holdout<'_>,
        segment: Option<&str>,
        sticky: Option<u64>,
    ) -> Option<Drawn> {
        match sticky {
            Some(key) => {
                let seed = mix(key ^ mix(self.epoch));
                let mut seeded = rand::rngs::SmallRng::seed_from_u64(seed);
                self.draw(&mut seeded, now_ms, taken, holdout, segment, Some(seed))
            }
            None => self.draw(rng, now_ms, taken, holdout, segment, None),
        }
    }

    fn draw<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        now_ms: f64,
        taken: &[&str],
        holdout: Holdout<'_>,
        segment: Option<&str>,
        sticky: Option<u64>,
    ) -> Option<Drawn> {
        let odds = Odds::new(self, now_ms, taken, holdout, segment);
        let arms = odds.open.len() as u32;
        if let Some(p) = odds.pin {
            let u: f64 = rng.random();
            if u < odds.pin_share {
                return Some(Drawn {
                    choice: Choice::Pinned,
                    probability: odds.of(&p.item.id),
                    served_by: ServedBy::Bandit,
                    arms,
                });
            }
        }
        if odds.share > 0.0 {
            let u: f64 = rng.random();
            if u < odds.share {
                let (choice, id) = match holdout {
                    Holdout::Fallback { item, .. } => (Choice::Baseline, item),
                    _ => {
                        let i = odds.open[rng.random_range(0..odds.open.len())];
                        (Choice::Arm(i), self.arms[i].item.id.as_str())
                    }
                };
                return Some(Drawn {
                    choice,
                    probability: odds.of(id),
                    served_by: ServedBy::Holdout,
                    arms,
                });
            }
        }
        let posteriors: Vec<Posterior> = odds
            .open
            .iter()
            .map(|&i| self.posterior(odds.view, i))
            .collect();
        let k = match sticky {
            // Each arm's draw is its posterior's quantile at a uniform fixed by the key and
            // the item: the same visitor gets the same draws while the posteriors stand still,
            // and nearly the same as they move, unlike a reseeded sampler.
            Some(seed) => {
                let draws = odds.open.iter().zip(&posteriors).map(|(&i, p)| {
                    let u = unit(mix(seed ^ stable_hash(&self.arms[i].item.id)));
                    p.quantile(u)
                });
                let mut best: Option<(usize, f64)> = None;
                for (k, d) in draws.enumerate() {
                    if best.is_none_or(|(_, b)| d > b) {
                        best = Some((k, d));
                    }
                }
                best?.0
            }
            None => bandit::pick(posteriors.iter(), rng)?,
        };
        let i = odds.open[k];
        Some(Drawn {
            choice: Choice::Arm(i),
            probability: odds.of(&self.arms[i].item.id),
            served_by: ServedBy::Bandit,
            arms,
        })
    }

    /// Each item's probability of being shown by a request of this snapshot on a page where
    /// it is the first slot (the arms, the pinned item, the holdout's editorial item), for a
    /// visitor in `segment` (its view): what the sample-ratio check expects of the logged
    /// impressions.
    pub fn serving_probabilities(
        &self,
        now_ms: f64,
        holdout: Holdout<'_>,
        segment: Option<&str>,
    ) -> Vec<(String, f64)> {
        let odds = Odds::new(self, now_ms, &[], holdout, segment);
        let mut items: Vec<&str> = self.arms.iter().map(|a| a.item.id.as_str()).collect();
        if let Some(p) = odds.pin {
            items.push(&p.item.id);
        }
        if let Holdout::Fallback { item, .. } = holdout {
            items.push(item);
        }
        items.sort_unstable();
        items.dedup();
        items
            .into_iter()
            .map(|id| (id.to_string(), odds.of(id)))
            .filter(|(_, q)| *q > MIN_LOGGED_PROBABILITY)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(version: u64) -> Snapshot {
        Snapshot {
            slot: "s".into(),
            epoch: 1,
            version,
            set: 0,
            produced_at_ms: 0.0,
            arms: Vec::new(),
            pinned: None,
            segments: Vec::new(),
            conditional: Default::default(),
        }
    }

    fn item(id: &str) -> CatalogItem {
        CatalogItem {
            id: id.into(),
            title: id.into(),
            image: String::new(),
            photographer: String::new(),
            category: String::new(),
            source_url: None,
            available: true,
        }
    }

    /// Four arms with distinct evidence, P(best) filled in as the object publishes it.
    fn four_arms(pinned: Option<&str>) -> Snapshot {
        let mut s = snap(1);
        for (id, clicks, imps) in [("a", 30, 300), ("b", 25, 300), ("c", 5, 100), ("d", 1, 10)] {
            s.arms.push(SnapshotArm {
                item: item(id),
                posterior: Posterior::UNIFORM.observe(clicks, imps),
                p_best: 0.0,
            });
        }
        s.pinned = pinned.map(|id| Pinned {
            pin: Pin {
                item: id.into(),
                until_ms: 1e15,
                share: 0.3,
                learning: Default::default(),
            },
            item: item(id),
        });
        s.ensure_p_best();
        s
    }

    /// Each item's share of many seeded decisions matches the probability the decisions
    /// logged for it, within 5 binomial standard deviations; every decision of an item logs
    /// the same probability, and those sum to one over the items.
    /// (With `sticky`, each decision is a different visitor's session.)
    fn shares_match_logged_probabilities(
        s: &Snapshot,
        taken: &[&str],
        holdout: Holdout<'_>,
        sticky: bool,
    ) {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let n = 40_000;
        let mut seen: std::collections::HashMap<String, (u64, f64)> = Default::default();
        for v in 0..n {
            let key = sticky.then(|| sticky_key(&format!("0:session-{v}"), "s"));
            let d = s.decide(&mut rng, 0.0, taken, holdout, None, key).unwrap();
            let id = match d.choice {
                Choice::Arm(i) => s.arms[i].item.id.clone(),
                Choice::Pinned => s.pinned.as_ref().unwrap().item.id.clone(),
                Choice::Baseline => "fallback".to_string(),
            };
            assert!(!taken.contains(&id.as_str()), "{id} was taken");
            let e = seen.entry(id.clone()).or_insert((0, d.probability));
            e.0 += 1;
            // Holdout and bandit decisions of one item log the same (mixture) probability.
            assert!((e.1 - d.probability).abs() < 1e-12, "{id}");
        }
        let total: f64 = seen.values().map(|(_, p)| p).sum();
        assert!(
            (total - 1.0).abs() < 1e-6,
            "probabilities sum to {total}: {seen:?}"
        );
        for (id, (count, p)) in &seen {
            let expected = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            assert!(
                (*count as f64 - expected).abs() <= 5.0 * sd + 1.0,
                "{id}: {count} shown, {expected:.0} expected (sd {sd:.1})"
            );
        }
    }

    #[test]
    fn logged_probabilities_are_the_chance_of_each_outcome() {
        let plain = four_arms(None);
        shares_match_logged_probabilities(&plain, &[], Holdout::Off, false);
        // Sticky picks, one per visitor, keep the same probabilities across visitors.
        shares_match_logged_probabilities(&plain, &[], Holdout::Uniform { share: 0.1 }, true);
        shares_match_logged_probabilities(&plain, &[], Holdout::Uniform { share: 0.1 }, false);
        // An earlier slot took the leader: P(best) is recomputed over the rest.
        shares_match_logged_probabilities(&plain, &["a"], Holdout::Uniform { share: 0.1 }, false);
        // A pin of an arm and of an outside item, with a holdout of either kind.
        shares_match_logged_probabilities(
            &four_arms(Some("b")),
            &[],
            Holdout::Uniform { share: 0.2 },
            false,
        );
        shares_match_logged_probabilities(
            &four_arms(Some("z")),
            &[],
            Holdout::Fallback {
                share: 0.2,
                item: "fallback",
            },
            false,
        );
    }

    #[test]
    fn a_sticky_visitor_keeps_the_pick_within_a_round() {
        let mut s = four_arms(None);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let pick = |s: &Snapshot, rng: &mut rand::rngs::SmallRng, key| match s
            .decide(rng, 0.0, &[], Holdout::Off, None, Some(key))
            .unwrap()
            .choice
        {
            Choice::Arm(i) => i,
            other => panic!("{other:?}"),
        };
        let mut moved = 0;
        for v in 0..500 {
            let key = sticky_key(&format!("0:visitor-{v}"), "home-top-pick");
            let first = pick(&s, &mut rng, key);
            assert_eq!(pick(&s, &mut rng, key), first, "same state, same pick");
            // A little more evidence for one arm: most visitors keep their pick.
            let mut later = s.clone();
            later.arms[1].posterior = later.arms[1].posterior.observe(1, 10);
            later.ensure_p_best();
            moved += usize::from(pick(&later, &mut rng, key) != first);
        }
        assert!(moved < 50, "{moved} of 500 visitors saw another pick");
        // A new round draws afresh: about as many change as P(not the same arm) implies.
        s.epoch += 1;
        let changed = (0..500)
            .filter(|v| {
                let key = sticky_key(&format!("0:visitor-{v}"), "home-top-pick");
                let mut t = s.clone();
                t.epoch -= 1;
                pick(&s, &mut rng, key) != pick(&t, &mut rng, key)
            })
            .count();
        assert!(
            changed > 100,
            "{changed} of 500 drew again in the new round"
        );
    }

    #[test]
    fn holdout_decisions_are_marked_and_uniform() {
        use rand::SeedableRng;
        let s = four_arms(None);
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let held: Vec<Drawn> = (0..20_000)
            .filter_map(|_| {
                s.decide(
                    &mut rng,
                    0.0,
                    &[],
                    Holdout::Uniform { share: 0.5 },
                    None,
                    None,
                )
            })
            .filter(|d| d.served_by == ServedBy::Holdout)
            .collect();
        // Binomial(20000, 0.5): sd 71.
        assert!(
            (held.len() as f64 - 10_000.0).abs() < 5.0 * 71.0,
            "{}",
            held.len()
        );
        let mut per = [0u32; 4];
        for d in &held {
            let Choice::Arm(i) = d.choice else {
                panic!("a uniform holdout shows arms")
            };
            per[i] += 1;
            assert_eq!(d.arms, 4);
        }
        let (m, p) = (held.len() as f64, 0.25);
        let sd = (m * p * (1.0 - p)).sqrt();
        for c in per {
            assert!((c as f64 - m * p).abs() < 5.0 * sd, "{per:?}");
        }
    }

    #[test]
    fn only_a_higher_version_is_newer() {
        assert!(snap(5).is_newer_than(&snap(4)));
        assert!(!snap(5).is_newer_than(&snap(5)));
        assert!(!snap(4).is_newer_than(&snap(5)));
    }
}
