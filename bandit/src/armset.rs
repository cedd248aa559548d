//! The rotating arm set: the rounds state machine of the 2015 post, with prior policies.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet, VecDeque};

use rand::seq::index;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::features::{FeatureModel, Features};
use crate::history::ArmHistory;
use crate::memory::{Memory, Recall, FRESH_POOL};
use crate::policy::{FreshPrior, PriorPolicy, Ranking, SurvivorPrior};
use crate::Posterior;

/// One catalog item in the current set, with its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    /// Catalog item id.
    pub item: String,
    /// Prior at the start of this round (carries survivors' evidence under `carry`).
    pub prior: Posterior,
    /// Clicks this round.
    pub clicks: u64,
    /// Impressions this round.
    pub impressions: u64,
    /// Clicks since the item entered the set.
    pub total_clicks: u64,
    /// Impressions since the item entered the set.
    pub total_impressions: u64,
    /// Round in which the item entered the set.
    pub since_round: u64,
    /// What the set remembered of the item's earlier stays when it came back
    /// ([`ArmSet::memory`]); its prior of the round it entered includes this evidence. Absent
    /// for an item new to the set (and in state stored before memory existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recalled: Option<Recall>,
}

impl Arm {
    fn fresh(item: String, prior: Posterior, round: u64) -> Arm {
        Arm {
            item,
            prior,
            clicks: 0,
            impressions: 0,
            total_clicks: 0,
            total_impressions: 0,
            since_round: round,
            recalled: None,
        }
    }
}

/// Rotation settings: n, X, the policy and the cool-down of retired items.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RotationConfig {
    /// Arms in the set (n).
    pub arms: usize,
    /// Impressions that end a round (X).
    pub round_impressions: u64,
    /// Prior policy applied at rotation.
    pub policy: PriorPolicy,
    /// Retired items are not drawn again for this many rounds (0: may return at once).
    pub cooldown_rounds: u64,
}

impl Default for RotationConfig {
    fn default() -> Self {
        RotationConfig {
            arms: 8,
            round_impressions: 2000,
            policy: PriorPolicy::default(),
            cooldown_rounds: 5,
        }
    }
}

/// The survivors and retirees of a finished round, decided before fresh items are fetched.
#[derive(Debug, Clone, PartialEq)]
pub struct RotationPlan {
    /// Indices into the current arms that stay, best score first.
    pub keep: Vec<usize>,
    /// Indices into the current arms that leave.
    pub retire: Vec<usize>,
    /// The ranking score of every current arm, by index (a posterior draw under
    /// [`crate::policy::Ranking::Draw`], the posterior mean or quantile otherwise).
    pub draws: Vec<f64>,
    /// How many fresh items would refill the set to n (n - floor(n/2), more under
    /// [`crate::policy::Ranking::Race`], as few as 0 under [`crate::policy::Ranking::Screen`]).
    pub fresh_needed: usize,
}

/// What a finished round did, for the operators' history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoundSummary {
    /// The round that ended.
    pub round: u64,
    /// Impressions counted in it.
    pub impressions: u64,
    /// Items kept, with their ranking draw.
    pub survivors: Vec<(String, f64)>,
    /// Items retired, with their ranking draw, clicks and impressions this round.
    pub retired: Vec<RetiredArm>,
    /// Items that entered the set.
    pub added: Vec<String>,
    /// Arms a screening policy retired during the round (the first
    /// [`MAX_LISTED_MID_ROUND`]), with their posterior mean as the draw.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub screened: Vec<RetiredArm>,
    /// Items that took the screened arms' places during the round (the first
    /// [`MAX_LISTED_MID_ROUND`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refilled: Vec<String>,
    /// Mid-round changes past those lists' bound.
    #[serde(default, skip_serializing_if = "crate::is_zero")]
    pub unlisted: u64,
}

/// Most arms screened out, and most items refilled, one round's summary lists.
pub const MAX_LISTED_MID_ROUND: usize = 32;

/// An arm that left the set at a rotation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetiredArm {
    /// Catalog item id.
    pub item: String,
    /// Its ranking score (below every survivor's, except under
    /// [`crate::policy::Ranking::Race`], which also retires arms of the top half on evidence).
    pub draw: f64,
    /// Clicks since it entered the set.
    pub clicks: u64,
    /// Impressions since it entered the set.
    pub impressions: u64,
}

/// The current arms, the round number and what the set has learned so far.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArmSet {
    /// Round number, starting at 1.
    pub round: u64,
    /// The arms of this round.
    pub arms: Vec<Arm>,
    /// Impressions counted this round.
    pub round_impressions: u64,
    /// Items retired recently, with the round they left in (bounded by the cool-down).
    pub retired: VecDeque<(String, u64)>,
    /// Evidence of past arms, for the empirical-Bayes prior.
    pub history: ArmHistory,
    /// The last fit of the weak empirical-Bayes prior and the history's push count then
    /// (absent in state stored before it existed). Screening retires arms often; refitting
    /// only every [`WEAK_REFIT_EVERY`] retirements keeps the per-batch cost O(n).
    #[serde(default)]
    pub weak_fit: Option<(u64, Posterior)>,
    /// Features of the current arms that have any, by item id (absent in state stored
    /// before it existed): recorded with the arm's evidence when it leaves, for the feature
    /// priors of [`PriorPolicy::features`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub features: BTreeMap<String, Features>,
    /// The last feature model and the history's push count then. Not stored: it is rebuilt
    /// from the history after a reload, then only every [`WEAK_REFIT_EVERY`] retirements.
    #[serde(skip)]
    feature_fit: FeatureFitCache,
    /// Under a screening policy, the evidence of items that left the set, so one drawn again
    /// comes back with it (see [`crate::memory`]); bounded by
    /// [`crate::memory::MEMORY_CAPACITY`]. Absent in state stored before it existed.
    #[serde(default, skip_serializing_if = "Memory::is_empty")]
    pub memory: Memory,
}

/// A cache of [`FeatureModel`]; it never makes two arm sets differ (equality ignores it).
#[derive(Debug, Clone, Default)]
struct FeatureFitCache(Option<(u64, FeatureModel)>);

impl PartialEq for FeatureFitCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// The screening bar is the best mean - SCREEN_BAR_SD * sd among the arms: a lower bound, so
/// a lucky start of a fresh arm does not raise the bar and condemn proven arms (0 and 2 did
/// worse in tuning).
pub const SCREEN_BAR_SD: f64 = 1.0;

/// Impressions an arm needs before its lower bound can set the screening bar.
pub const SCREEN_BAR_MIN_IMPRESSIONS: u64 = 20;

/// Retirements after which the weak empirical-Bayes prior is refitted.
pub const WEAK_REFIT_EVERY: u64 = 16;

/// Outcome of recording feedback for one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The item is in the set and was counted.
    Counted,
    /// The item is not in the current set; nothing changed.
    NotInSet,
}

impl ArmSet {
    /// Round 1 with `items` as its arms, each with the policy's fresh prior.
    pub fn new(items: Vec<String>, policy: &PriorPolicy) -> ArmSet {
        ArmSet::with_features(
            items
                .into_iter()
                .map(|i| (i, Features::default()))
                .collect(),
            policy,
        )
    }

    /// Round 1 with `items` and their features as its arms, each with the policy's fresh
    /// prior (no history yet, so the features only matter once the arms leave).
    pub fn with_features(items: Vec<(String, Features)>, policy: &PriorPolicy) -> ArmSet {
        let mut set = ArmSet {
            round: 1,
            arms: Vec::new(),
            round_impressions: 0,
            retired: VecDeque::new(),
            history: ArmHistory::default(),
            weak_fit: None,
            features: BTreeMap::new(),
            feature_fit: FeatureFitCache::default(),
            memory: Memory::default(),
        };
        // No history yet: nothing to cache, so the fits are not refreshed (as before features).
        let cache = FeatureFitCache::default();
        let priors = set.fresh_priors(policy, &cache);
        let mut seen = HashSet::new();
        let mut features = BTreeMap::new();
        let arms = items
            .into_iter()
            .filter(|(i, _)| seen.insert(i.clone()))
            .map(|(i, f)| {
                let prior = priors.prior(&f);
                if !f.is_empty() {
                    features.insert(i.clone(), f);
                }
                Arm::fresh(i, prior, 1)
            })
            .collect();
        drop(priors);
        set.arms = arms;
        set.features = features;
        set
    }

    /// The posterior of every arm under `policy`, in arm order.
    pub fn posteriors(&self, policy: &PriorPolicy) -> Vec<Posterior> {
        self.arms
            .iter()
            .map(|a| policy.posterior(a.prior, a.clicks, a.impressions))
            .collect()
    }

    /// Index of the arm holding `item`.
    pub fn position(&self, item: &str) -> Option<usize> {
        self.arms.iter().position(|a| a.item == item)
    }

    /// Adds feedback for one item; items outside the set are left alone.
    pub fn record(&mut self, item: &str, impressions: u64, clicks: u64) -> Recorded {
        match self.position(item) {
            Some(i) => {
                let arm = &mut self.arms[i];
                arm.impressions = arm.impressions.saturating_add(impressions);
                arm.clicks = arm.clicks.saturating_add(clicks);
                arm.total_impressions = arm.total_impressions.saturating_add(impressions);
                arm.total_clicks = arm.total_clicks.saturating_add(clicks);
                self.round_impressions = self.round_impressions.saturating_add(impressions);
                Recorded::Counted
            }
            None => Recorded::NotInSet,
        }
    }

    /// Whether the round has reached X impressions.
    pub fn round_complete(&self, config: &RotationConfig) -> bool {
        self.round_impressions >= config.round_impressions
    }

    /// Items a fresh draw must avoid, sorted: the current arms and those retired within the
    /// cool-down (the list a catalog sample is asked to skip).
    pub fn exclude_list(&self, config: &RotationConfig) -> Vec<String> {
        let mut out: Vec<String> = self
            .excluded(config)
            .into_iter()
            .map(String::from)
            .collect();
        out.sort_unstable();
        out
    }

    /// Adds items as fresh arms of the current round with the policy's fresh prior, skipping
    /// any already in the set; returns how many were added.
    pub fn add_fresh(
        &mut self,
        items: impl IntoIterator<Item = String>,
        policy: &PriorPolicy,
    ) -> usize {
        self.add_fresh_with_features(items.into_iter().map(|i| (i, Features::default())), policy)
    }

    /// As [`ArmSet::add_fresh`], with each item's features: they are kept with the arm, and
    /// under [`PriorPolicy::features`] they refine its fresh prior.
    pub fn add_fresh_with_features(
        &mut self,
        items: impl IntoIterator<Item = (String, Features)>,
        policy: &PriorPolicy,
    ) -> usize {
        self.refresh_fits(policy);
        // Taken out while the arms change, so the priors can borrow it.
        let cache = std::mem::take(&mut self.feature_fit);
        let priors = self.fresh_priors(policy, &cache);
        let mut added = 0;
        for (item, features) in items {
            if self.position(&item).is_none() {
                let prior = priors.prior(&features);
                if !features.is_empty() {
                    self.features.insert(item.clone(), features);
                }
                let arm = recall(
                    &mut self.memory,
                    policy,
                    Arm::fresh(item, prior, self.round),
                );
                self.arms.push(arm);
                added += 1;
            }
        }
        drop(priors);
        self.feature_fit = cache;
        added
    }

    /// Records a leaving arm's evidence, with its features, in the history (and in the memory
    /// if `remember`).
    fn record_leaving(&mut self, i: usize, remember: bool) {
        let memory = remember.then_some(&mut self.memory);
        note_leaving(&self.arms[i], &mut self.history, &mut self.features, memory);
    }

    /// Takes `item` out of the set between rounds (an operator's exclusion, a takedown): its
    /// evidence joins the history like a retiree's (not the memory: it is not drawn again
    /// while excluded), the round goes on with the others. Whether it was in the set.
    pub fn remove(&mut self, item: &str) -> bool {
        let Some(i) = self.position(item) else {
            return false;
        };
        self.record_leaving(i, false);
        let arm = self.arms.remove(i);
        self.retired.push_back((arm.item, self.round));
        true
    }

    /// Items a fresh draw must avoid: the current arms and those retired within the cool-down.
    pub fn excluded(&self, config: &RotationConfig) -> HashSet<&str> {
        let mut out: HashSet<&str> = self.arms.iter().map(|a| a.item.as_str()).collect();
        for (item, round) in &self.retired {
            if self.round.saturating_sub(*round) < config.cooldown_rounds {
                out.insert(item);
            }
        }
        out
    }

    /// Ranks the arms by the policy's ranking score (one posterior draw each under the 2015
    /// rule, [`crate::policy::Ranking::Draw`]): the top floor(n/2) survive (see
    /// [`crate::policy::Ranking`] for the rankings that keep fewer or more).
    pub fn plan_rotation<R: Rng + ?Sized>(
        &self,
        config: &RotationConfig,
        rng: &mut R,
    ) -> RotationPlan {
        let ranking = config.policy.ranking;
        let draws: Vec<f64> = self
            .posteriors(&config.policy)
            .iter()
            .map(|p| ranking.score(p, rng))
            .collect();
        let mut order: Vec<usize> = (0..self.arms.len()).collect();
        order.sort_by(|&a, &b| draws[b].total_cmp(&draws[a]));
        let keep_n = (config.arms / 2).min(order.len());
        if let Ranking::Screen { .. } = ranking {
            // `draws` are posterior means: every arm not confidently behind stays, best
            // first, up to n (an operator may have lowered n). Keeping only floor(n/2), as
            // the other rankings do, retired good arms that had not yet pulled ahead (a
            // top-10 item dozens of times a run in the evaluation) and screened no more: the
            // slots of condemned arms are refilled after every batch anyway.
            let behind = self.behind(&config.policy, true);
            return screen_plan(&order, &behind, config.arms, draws);
        }
        let mut retire = order.split_off(keep_n);
        if let Ranking::Race { eps } = ranking {
            // `draws` are posterior means here, so `order[0]` is the leader; it always stays.
            let posteriors = self.posteriors(&config.policy);
            if let Some(&leader) = order.first() {
                let lead = draws[leader];
                let (keep, out): (Vec<usize>, Vec<usize>) = order
                    .iter()
                    .partition(|&&i| i == leader || 1.0 - posteriors[i].cdf(lead) >= eps);
                order = keep;
                // Retired on evidence first: they ranked above the rest by mean.
                retire.splice(0..0, out);
            }
        }
        let keep_n = order.len();
        RotationPlan {
            fresh_needed: config.arms.saturating_sub(keep_n),
            keep: order,
            retire,
            draws,
        }
    }

    /// Indices of the arms confidently behind under [`Ranking::Screen`] (none under other
    /// rankings). The bar is the best lower bound (mean - [`SCREEN_BAR_SD`] sd) among the arms
    /// with at least [`SCREEN_BAR_MIN_IMPRESSIONS`] impressions (no bar, nothing behind, if none);
    /// every other arm is behind when its posterior probability of exceeding the bar has
    /// fallen below `eps` times its value under the arm's prior of this round, and, if
    /// `round_end`, also when an arm kept from an earlier round has that probability below
    /// `eps`. O(n): two incomplete-beta evaluations per arm.
    pub fn behind(&self, policy: &PriorPolicy, round_end: bool) -> Vec<usize> {
        let own = self.posteriors(policy);
        self.behind_in_views(policy, round_end, [(1.0, own.as_slice())])
            .unwrap_or_default()
    }

    /// The arms behind over weighted views of the set (one per visitor segment, in the set's
    /// order; the set's own posteriors alone for [`ArmSet::behind`]): each view sets its own
    /// bar ([`ArmSet::standing`]), an arm's odds of beating it, now and under its prior, are
    /// averaged over the views by weight, and the arm is behind when that average condemns
    /// it ([`ArmSet::condemned`]); a view's leader never is. `None` when no view has a bar
    /// (or the policy does not screen: then an empty list).
    pub(crate) fn behind_in_views<'a>(
        &self,
        policy: &PriorPolicy,
        round_end: bool,
        views: impl IntoIterator<Item = (f64, &'a [Posterior])>,
    ) -> Option<Vec<usize>> {
        let Ranking::Screen { eps } = policy.ranking else {
            return Some(Vec::new());
        };
        let n = self.arms.len();
        let mut leads = vec![false; n];
        let mut odds = vec![Odds::default(); n];
        let mut total = 0.0;
        let start = self.screening_priors(policy);
        for (weight, view) in views {
            if weight <= 0.0 || !weight.is_finite() {
                continue;
            }
            let Some(standing) = self.standing(view, &start) else {
                continue;
            };
            leads[standing.lead] = true;
            total += weight;
            for (sum, o) in odds.iter_mut().zip(&standing.odds) {
                sum.now += weight * o.now;
                sum.before += weight * o.before;
            }
        }
        if total == 0.0 {
            return None;
        }
        let behind = (0..n)
            .filter(|&i| {
                let mean = Odds {
                    now: odds[i].now / total,
                    before: odds[i].before / total,
                };
                !leads[i] && self.condemned(i, mean, eps, round_end)
            })
            .collect();
        Some(behind)
    }

    /// Each arm's start-of-round prior for screening: its prior of this round, except that
    /// a fresh arm gets the plain fresh prior when its own includes more: under feature
    /// priors, its features, so a category the fit predicts poor condemns an item before it
    /// costs impressions, while evidence must still condemn the rest; and when it came back
    /// with remembered evidence, so that evidence counts toward condemning it (against a
    /// stricter factor, [`Recall::retire_factor`]).
    pub fn screening_priors(&self, policy: &PriorPolicy) -> Vec<Posterior> {
        let plain_start = |arm: &Arm| {
            arm.since_round == self.round && (policy.features || arm.recalled.is_some())
        };
        let base = self
            .arms
            .iter()
            .any(plain_start)
            .then(|| self.fresh_prior(policy));
        self.arms
            .iter()
            .map(|arm| match base {
                Some(b) if plain_start(arm) => b,
                _ => arm.prior,
            })
            .collect()
    }

    /// Each arm's [`Standing`] against the screening bar set on `posteriors` (one per arm, in
    /// order: the arms' own, or a visitor segment's view of them), its start taken under
    /// `start` ([`ArmSet::screening_priors`]); `None` without a bar.
    pub fn standing(&self, posteriors: &[Posterior], start: &[Posterior]) -> Option<Standing> {
        if posteriors.len() != self.arms.len() || start.len() != self.arms.len() {
            return None;
        }
        let (lead, bar) = posteriors
            .iter()
            .zip(&self.arms)
            .map(|(p, arm)| {
                // A prior alone must not set the bar: Beta(1, 1) has mean - sd = 0.21.
                if arm.total_impressions >= SCREEN_BAR_MIN_IMPRESSIONS {
                    p.mean() - SCREEN_BAR_SD * p.variance().sqrt()
                } else {
                    f64::NEG_INFINITY
                }
            })
            .enumerate()
            .filter(|(_, bar)| bar.is_finite())
            .max_by(|a, b| a.1.total_cmp(&b.1))?;
        let odds = posteriors
            .iter()
            .zip(start)
            .map(|(p, prior)| Odds {
                now: 1.0 - p.cdf(bar),
                before: 1.0 - prior.cdf(bar),
            })
            .collect();
        Some(Standing { lead, odds })
    }

    /// Whether arm `i` with `odds` of beating the bar is confidently behind (see
    /// [`ArmSet::behind`]).
    pub fn condemned(&self, i: usize, odds: Odds, eps: f64, round_end: bool) -> bool {
        // Evidence, not the prior, must condemn an arm: its odds of beating the bar must have
        // fallen by the factor eps since the round began.
        let Some(arm) = self.arms.get(i) else {
            return false;
        };
        let kept = arm.since_round < self.round;
        let factor = match arm.recalled {
            Some(r) if !kept => r.retire_factor(eps),
            _ => eps,
        };
        odds.now < factor * odds.before || (round_end && kept && odds.now < eps)
    }

    /// Retires now every arm [`ArmSet::behind`] names, mid-round: their evidence joins the
    /// history and they enter the cool-down as at a rotation; the set is left short, for the
    /// caller to refill with [`ArmSet::add_fresh`]. Returns them, in arm order.
    pub fn retire_behind(&mut self, config: &RotationConfig) -> Vec<RetiredArm> {
        let behind = self.behind(&config.policy, false);
        self.retire_now(config, &behind)
    }

    /// Retires the arms at indices `which` mid-round, as [`ArmSet::retire_behind`] does with
    /// the ones it finds (a contextual slot finds them per segment:
    /// `crate::context::segment_behind`). Returns them, in arm order.
    pub fn retire_now(&mut self, config: &RotationConfig, which: &[usize]) -> Vec<RetiredArm> {
        if which.is_empty() {
            return Vec::new();
        }
        let posteriors = self.posteriors(&config.policy);
        let mut out = Vec::with_capacity(which.len());
        let mut k = 0;
        let round = self.round;
        let remember = remembers(&config.policy);
        let history = &mut self.history;
        let retired = &mut self.retired;
        let features = &mut self.features;
        let memory = &mut self.memory;
        self.arms.retain(|arm| {
            let i = k;
            k += 1;
            if !which.contains(&i) {
                return true;
            }
            let memory = remember.then_some(&mut *memory);
            note_leaving(arm, history, features, memory);
            retired.push_back((arm.item.clone(), round));
            out.push(RetiredArm {
                item: arm.item.clone(),
                draw: posteriors[i].mean(),
                clicks: arm.total_clicks,
                impressions: arm.total_impressions,
            });
            false
        });
        out
    }

    /// Tops the set up to n arms from an in-memory `catalog` (simulations, tests), skipping
    /// excluded items; returns how many joined.
    pub fn refill_from<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        catalog: &[String],
        rng: &mut R,
    ) -> usize {
        self.refill_from_features(config, catalog, |_| Features::default(), rng)
    }

    /// As [`ArmSet::refill_from`], the items' features given by `features_of`.
    pub fn refill_from_features<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        catalog: &[String],
        features_of: impl Fn(&str) -> Features,
        rng: &mut R,
    ) -> usize {
        let needed = config.arms.saturating_sub(self.arms.len());
        if needed == 0 {
            return 0;
        }
        let fresh = self.sample_fresh(config, catalog, needed, rng);
        let fresh = fresh.into_iter().map(|i| {
            let f = features_of(&i);
            (i, f)
        });
        self.add_fresh_with_features(fresh, &config.policy)
    }

    /// Up to `needed` random catalog items that are neither in the set nor cooling down.
    fn sample_fresh<R: Rng + ?Sized>(
        &self,
        config: &RotationConfig,
        catalog: &[String],
        needed: usize,
        rng: &mut R,
    ) -> Vec<String> {
        let excluded = self.excluded(config);
        let candidates = candidate_indices(catalog.len(), needed, rng);
        let mut fresh = choose_fresh(
            candidates.iter().map(|&i| catalog[i].as_str()),
            &excluded,
            fresh_wanted(&config.policy, needed),
        );
        if fresh.len() < needed {
            // A small catalog: fall back to a scan in random order.
            let all = index::sample(rng, catalog.len(), catalog.len());
            let more = choose_fresh(
                all.iter()
                    .map(|i| catalog[i].as_str())
                    .filter(|c| !fresh.iter().any(|f| f == c)),
                &excluded,
                needed - fresh.len(),
            );
            fresh.extend(more);
        }
        let order = self.prefer_fresh(&config.policy, &fresh, rng);
        order
            .into_iter()
            .take(needed)
            .map(|k| fresh[k].clone())
            .collect()
    }

    /// The order in which a refill should take `candidates`: under a screening policy with
    /// anything remembered, by one posterior draw each ([`Memory::prefer`]); as given
    /// otherwise (the catalog's draw is already random). Indices into `candidates`.
    pub fn prefer_fresh<R: Rng + ?Sized, S: AsRef<str>>(
        &self,
        policy: &PriorPolicy,
        candidates: &[S],
        rng: &mut R,
    ) -> Vec<usize> {
        if !remembers(policy) || self.memory.is_empty() {
            return (0..candidates.len()).collect();
        }
        let items: Vec<&str> = candidates.iter().map(AsRef::as_ref).collect();
        self.memory.prefer(&items, self.fresh_prior(policy), rng)
    }

    /// Ends the round: applies `plan`, admits `fresh` items (skipping any already in the set
    /// or repeated, and any beyond what refills the set), and starts the next round.
    pub fn rotate(
        &mut self,
        config: &RotationConfig,
        plan: &RotationPlan,
        fresh: Vec<String>,
    ) -> RoundSummary {
        let fresh = fresh
            .into_iter()
            .map(|i| (i, Features::default()))
            .collect();
        self.rotate_with_features(config, plan, fresh)
    }

    /// As [`ArmSet::rotate`], with the fresh items' features: they are kept with the arms,
    /// and under [`PriorPolicy::features`] they refine the fresh priors (and the prior
    /// survivors are shrunk toward).
    pub fn rotate_with_features(
        &mut self,
        config: &RotationConfig,
        plan: &RotationPlan,
        fresh: Vec<(String, Features)>,
    ) -> RoundSummary {
        let policy = config.policy;
        let ended = self.round;
        let next = ended + 1;
        self.refresh_fits(&policy);
        // Taken out while the arms change, so the priors can borrow it.
        let cache = std::mem::take(&mut self.feature_fit);
        let priors = self.fresh_priors(&policy, &cache);

        let mut retired = Vec::with_capacity(plan.retire.len());
        for &i in &plan.retire {
            self.record_leaving(i, remembers(&policy));
            let arm = &self.arms[i];
            self.retired.push_back((arm.item.clone(), ended));
            retired.push(RetiredArm {
                item: arm.item.clone(),
                draw: plan.draws[i],
                clicks: arm.total_clicks,
                impressions: arm.total_impressions,
            });
        }
        let mut survivors = Vec::with_capacity(plan.keep.len());
        let mut arms = Vec::with_capacity(config.arms);
        for &i in &plan.keep {
            let old = &self.arms[i];
            survivors.push((old.item.clone(), plan.draws[i]));
            let fresh_prior = match self.features.get(&old.item) {
                Some(f) => priors.prior(f),
                None => priors.base,
            };
            let prior = match policy.survivors {
                SurvivorPrior::Reset => fresh_prior,
                SurvivorPrior::Carry { decay } => {
                    let post = policy.posterior(old.prior, old.clicks, old.impressions);
                    Posterior {
                        alpha: decay * post.alpha + (1.0 - decay) * fresh_prior.alpha,
                        beta: decay * post.beta + (1.0 - decay) * fresh_prior.beta,
                    }
                }
            };
            arms.push(Arm {
                prior,
                clicks: 0,
                impressions: 0,
                ..old.clone()
            });
        }
        let mut present: HashSet<String> = arms.iter().map(|a| a.item.clone()).collect();
        let mut added = Vec::new();
        for (item, features) in fresh {
            if arms.len() >= config.arms.max(plan.keep.len()) {
                break;
            }
            if present.insert(item.clone()) {
                added.push(item.clone());
                let prior = priors.prior(&features);
                if !features.is_empty() {
                    self.features.insert(item.clone(), features);
                }
                arms.push(recall(
                    &mut self.memory,
                    &policy,
                    Arm::fresh(item, prior, next),
                ));
            }
        }
        drop(priors);
        self.feature_fit = cache;
        self.arms = arms;
        self.round = next;
        let impressions = std::mem::take(&mut self.round_impressions);
        // Entries older than the cool-down can never be excluded again.
        while let Some((_, r)) = self.retired.front() {
            if next.saturating_sub(*r) >= config.cooldown_rounds {
                self.retired.pop_front();
            } else {
                break;
            }
        }
        RoundSummary {
            round: ended,
            impressions,
            survivors,
            retired,
            added,
            screened: Vec::new(),
            refilled: Vec::new(),
            unlisted: 0,
        }
    }

    /// Ends the round drawing fresh items from an in-memory `catalog` (simulations, tests).
    pub fn rotate_from<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        catalog: &[String],
        rng: &mut R,
    ) -> RoundSummary {
        self.rotate_from_features(config, catalog, |_| Features::default(), rng)
    }

    /// As [`ArmSet::rotate_from`], with a `plan` made elsewhere (the contextual round end,
    /// [`crate::context::segment_rotation_plan`]).
    pub fn rotate_from_plan<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        plan: &RotationPlan,
        catalog: &[String],
        rng: &mut R,
    ) -> RoundSummary {
        let fresh = self.sample_fresh(config, catalog, plan.fresh_needed, rng);
        self.rotate(config, plan, fresh)
    }

    /// As [`ArmSet::rotate_from`], the items' features given by `features_of`.
    pub fn rotate_from_features<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        catalog: &[String],
        features_of: impl Fn(&str) -> Features,
        rng: &mut R,
    ) -> RoundSummary {
        let plan = self.plan_rotation(config, rng);
        let fresh = self.sample_fresh(config, catalog, plan.fresh_needed, rng);
        let fresh = fresh
            .into_iter()
            .map(|i| {
                let f = features_of(&i);
                (i, f)
            })
            .collect();
        self.rotate_with_features(config, &plan, fresh)
    }

    fn weak_fit_stale(&self, at: u64) -> bool {
        self.history.pushed.saturating_sub(at) >= WEAK_REFIT_EVERY || self.history.pushed < at
    }

    /// Refreshes the cached fits the policy uses when stale.
    fn refresh_fits(&mut self, policy: &PriorPolicy) {
        self.refresh_weak_fit(policy);
        if !policy.features || policy.fresh == FreshPrior::Uniform {
            return;
        }
        if matches!(self.feature_fit.0, Some((at, _)) if !self.weak_fit_stale(at)) {
            return;
        }
        let model = self.fit_feature_model();
        self.feature_fit = FeatureFitCache(Some((self.history.pushed, model)));
    }

    /// The full (not weakened) empirical-Bayes fit: cached under the weak prior.
    pub fn global_fit(&self) -> Posterior {
        match self.weak_fit {
            Some((at, fit)) if !self.weak_fit_stale(at) => fit,
            _ => self.history.fit(
                self.arms
                    .iter()
                    .map(|a| (a.total_clicks, a.total_impressions)),
            ),
        }
    }

    /// What the feature model finds in the history and the current arms, for display
    /// ([`FeatureModel::summary`] at the global fit the fresh priors use).
    pub fn feature_summary(&self) -> Vec<crate::features::KeySummary> {
        FeatureModel::summary(self.global_fit(), self.arms_with_features())
    }

    /// The history's arms with features, then the current ones: what the feature model fits.
    fn arms_with_features(&self) -> impl Iterator<Item = (&Features, u64, u64)> {
        let current = self.arms.iter().filter_map(|a| {
            self.features
                .get(&a.item)
                .map(|f| (f, a.total_clicks, a.total_impressions))
        });
        self.history.with_features().chain(current)
    }

    /// Fits the feature model to the history and the current arms. O(history) likelihood
    /// evaluations per group, so callers cache it.
    fn fit_feature_model(&self) -> FeatureModel {
        FeatureModel::fit(self.global_fit(), self.arms_with_features())
    }

    /// The policy's fresh prior and, under [`PriorPolicy::features`], the feature model to
    /// refine it with (cached if fresh, else fitted now).
    fn fresh_priors<'a>(
        &self,
        policy: &PriorPolicy,
        cache: &'a FeatureFitCache,
    ) -> FreshPriors<'a> {
        let base = self.fresh_prior(policy);
        let model = if policy.features && policy.fresh != FreshPrior::Uniform {
            match &cache.0 {
                Some((at, m)) if !self.weak_fit_stale(*at) => Some(Cow::Borrowed(m)),
                _ => Some(Cow::Owned(self.fit_feature_model())),
            }
        } else {
            None
        };
        FreshPriors { base, model }
    }

    /// The prior a fresh item with `features` gets now under `policy`: the
    /// [`ArmSet::fresh_prior`], refined by the features under [`PriorPolicy::features`].
    pub fn fresh_prior_for(&self, policy: &PriorPolicy, features: &Features) -> Posterior {
        self.fresh_priors(policy, &self.feature_fit).prior(features)
    }

    /// Refreshes the cached fit behind [`FreshPrior::WeakEmpiricalBayes`] when stale.
    fn refresh_weak_fit(&mut self, policy: &PriorPolicy) {
        if !matches!(policy.fresh, FreshPrior::WeakEmpiricalBayes { .. }) {
            return;
        }
        if matches!(self.weak_fit, Some((at, _)) if !self.weak_fit_stale(at)) {
            return;
        }
        let fit = self.history.fit(
            self.arms
                .iter()
                .map(|a| (a.total_clicks, a.total_impressions)),
        );
        self.weak_fit = Some((self.history.pushed, fit));
    }

    /// The prior a fresh item gets now under `policy`.
    pub fn fresh_prior(&self, policy: &PriorPolicy) -> Posterior {
        match policy.fresh {
            FreshPrior::Uniform => Posterior::UNIFORM,
            FreshPrior::EmpiricalBayes => self.history.fit(
                self.arms
                    .iter()
                    .map(|a| (a.total_clicks, a.total_impressions)),
            ),
            FreshPrior::WeakEmpiricalBayes { strength } => {
                let fit = self.global_fit();
                let s = fit.alpha + fit.beta;
                if s <= strength {
                    fit
                } else {
                    Posterior {
                        alpha: fit.alpha * strength / s,
                        beta: fit.beta * strength / s,
                    }
                }
            }
        }
    }
}

/// Records `arm`, leaving, in the history with its features (taken out of `features`), and in
/// the memory if one is given.
fn note_leaving(
    arm: &Arm,
    history: &mut ArmHistory,
    features: &mut BTreeMap<String, Features>,
    memory: Option<&mut Memory>,
) {
    let f = features.remove(&arm.item).unwrap_or_default();
    history.push_with(arm.total_clicks, arm.total_impressions, f);
    if let Some(memory) = memory {
        memory.remember(
            &arm.item,
            arm.recalled,
            arm.total_clicks,
            arm.total_impressions,
        );
    }
}

/// Whether `policy` keeps a memory of retired arms: the screening policies do.
pub fn remembers(policy: &PriorPolicy) -> bool {
    matches!(policy.ranking, Ranking::Screen { .. })
}

/// How many catalog candidates a refill that needs `needed` items should draw: more under a
/// memory, so [`ArmSet::prefer_fresh`] has a choice.
pub fn fresh_wanted(policy: &PriorPolicy, needed: usize) -> usize {
    if remembers(policy) {
        needed.saturating_mul(FRESH_POOL)
    } else {
        needed
    }
}

/// `arm`, fresh, with what `memory` holds of it added to its prior under a screening policy.
fn recall(memory: &mut Memory, policy: &PriorPolicy, mut arm: Arm) -> Arm {
    if remembers(policy) {
        if let Some(r) = memory.take(&arm.item) {
            arm.prior = r.posterior(arm.prior);
            arm.recalled = Some(r);
        }
    }
    arm
}

/// The fresh prior of one moment: the policy's base prior and the feature model, if any.
struct FreshPriors<'a> {
    base: Posterior,
    model: Option<Cow<'a, FeatureModel>>,
}

impl FreshPriors<'_> {
    fn prior(&self, features: &Features) -> Posterior {
        match &self.model {
            Some(m) if !features.is_empty() => m.prior(self.base, features),
            _ => self.base,
        }
    }
}

/// Oversampling factor for fresh candidates, so that exclusions rarely leave the set short.
pub const CANDIDATE_FACTOR: usize = 4;

/// Distinct random catalog positions to consider as fresh items: `CANDIDATE_FACTOR` times
/// what is needed plus a margin, capped at the catalog size.
pub fn candidate_indices<R: Rng + ?Sized>(
    catalog_len: usize,
    needed: usize,
    rng: &mut R,
) -> Vec<usize> {
    let want = (needed * CANDIDATE_FACTOR + 8).min(catalog_len);
    index::sample(rng, catalog_len, want).into_vec()
}

/// The first `needed` candidates that are not excluded, without repeats.
fn choose_fresh<'a>(
    candidates: impl IntoIterator<Item = &'a str>,
    excluded: &HashSet<&str>,
    needed: usize,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(needed);
    for c in candidates {
        if out.len() >= needed {
            break;
        }
        if !excluded.contains(c) && !out.iter().any(|o| o == c) {
            out.push(c.to_string());
        }
    }
    out
}

/// Where the arms stand against a screening bar ([`ArmSet::standing`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    /// The arm whose lower bound sets the bar (never behind).
    pub lead: usize,
    /// Each arm's odds of beating the bar, in the set's order.
    pub odds: Vec<Odds>,
}

/// An arm's probability of exceeding a screening bar, under its posterior and at the start
/// of the round ([`ArmSet::screening_priors`]).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Odds {
    /// Under the posterior.
    pub now: f64,
    /// Under the arm's start-of-round prior.
    pub before: f64,
}

/// A screening round end's plan: the arms of `order` (best first) not `behind` stay, up to
/// `n`; the rest retire, those cut by `n` first.
pub(crate) fn screen_plan(
    order: &[usize],
    behind: &[usize],
    n: usize,
    draws: Vec<f64>,
) -> RotationPlan {
    let (mut keep, mut retire): (Vec<usize>, Vec<usize>) =
        order.iter().partition(|i| !behind.contains(i));
    if keep.len() > n {
        let rest = keep.split_off(n);
        retire.splice(0..0, rest);
    }
    RotationPlan {
        fresh_needed: n.saturating_sub(keep.len()),
        keep,
        retire,
        draws,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    const WEAK: Posterior = Posterior {
        alpha: 0.6,
        beta: 19.4,
    };

    fn screening() -> RotationConfig {
        RotationConfig {
            arms: 4,
            round_impressions: 1_000_000,
            policy: "carry-weak20-screen0.1:0.7".parse().unwrap(),
            cooldown_rounds: 5,
        }
    }

    fn arm(item: &str, prior: Posterior, clicks: u64, impressions: u64, since: u64) -> Arm {
        Arm {
            item: item.into(),
            prior,
            clicks,
            impressions,
            total_clicks: clicks,
            total_impressions: impressions,
            since_round: since,
            recalled: None,
        }
    }

    fn set(arms: Vec<Arm>, round: u64) -> ArmSet {
        let mut s = ArmSet::new(Vec::new(), &PriorPolicy::RESET);
        s.arms = arms;
        s.round = round;
        s
    }

    /// Round 1 of four arms: a proven leader near 0.15, an untried arm, a dud (0 of 100)
    /// and a hot newcomer (20 of 100).
    fn lead_new_dud_hot() -> ArmSet {
        set(
            vec![
                arm("lead", Posterior::UNIFORM, 300, 2000, 1),
                arm("new", WEAK, 0, 0, 1),
                arm("dud", WEAK, 0, 100, 1),
                arm("hot", WEAK, 20, 100, 1),
            ],
            1,
        )
    }

    #[test]
    fn screening_retires_on_evidence_not_on_the_prior() {
        let config = screening();
        // Leader near 0.15 (bar about 0.142); the weak prior alone gives a fresh arm only
        // about a 2% chance of beating it, below eps: the prior must not condemn it.
        let mut s = lead_new_dud_hot();
        assert_eq!(s.behind(&config.policy, false), vec![2]);
        let out = s.retire_behind(&config);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].item, "dud");
        assert_eq!(s.arms.len(), 3);
        assert_eq!(s.history.pushed, 1);
        assert!(s.exclude_list(&config).contains(&"dud".to_string()));
        let catalog: Vec<String> = ["lead", "new", "dud", "hot", "x", "y"]
            .map(String::from)
            .to_vec();
        let mut rng = SmallRng::seed_from_u64(7);
        assert_eq!(s.refill_from(&config, &catalog, &mut rng), 1);
        let last = &s.arms[3];
        assert!(last.item == "x" || last.item == "y", "{}", last.item);
        assert_eq!((last.impressions, last.since_round), (0, 1));
        // Nothing else is behind now, and a second call retires nothing.
        let again = s.retire_behind(&config);
        assert!(again.is_empty(), "{again:?} {:?}", s.arms);
    }

    #[test]
    fn screened_arms_are_remembered_and_come_back_with_their_evidence() {
        let config = RotationConfig {
            cooldown_rounds: 0,
            ..screening()
        };
        let policy = config.policy;
        let mut s = lead_new_dud_hot();
        assert_eq!(s.retire_behind(&config).len(), 1);
        let dud = Recall {
            clicks: 0,
            impressions: 100,
            stays: 1,
        };
        assert_eq!(s.memory.get("dud"), Some(dud));
        // A refill orders its candidates by posterior draws: the unseen item before the dud
        // here (how often in general: the memory's tests).
        let mut rng = SmallRng::seed_from_u64(3);
        assert_eq!(s.prefer_fresh(&policy, &["dud", "x"], &mut rng), vec![1, 0]);

        // Drawn again, the dud comes back with its 100 impressions in its prior, and that
        // evidence condemns it before it costs another impression.
        let fresh = s.fresh_prior(&policy);
        assert_eq!(s.add_fresh(["dud".to_string()], &policy), 1);
        let back = &s.arms[3];
        assert_eq!(back.recalled, Some(dud));
        assert_eq!(back.prior, fresh.observe(0, 100));
        assert!(
            s.memory.get("dud").is_none(),
            "in the set, not in the memory"
        );
        assert_eq!(s.behind(&policy, false), vec![3]);
        s.retire_behind(&config);
        assert_eq!(s.memory.get("dud"), Some(dud), "a stay without impressions");
        // Back again and shown: the new stay's counts are added.
        assert_eq!(s.add_fresh(["dud".to_string()], &policy), 1);
        s.record("dud", 10, 1);
        s.retire_now(&config, &[3]);
        let twice = Recall {
            clicks: 1,
            impressions: 110,
            stays: 2,
        };
        assert_eq!(s.memory.get("dud"), Some(twice));

        // An item remembered as strong comes back ahead of a fresh one and is kept.
        s.memory.remember("star", None, 30, 100);
        assert_eq!(s.add_fresh(["star".to_string()], &policy), 1);
        assert!(s.behind(&policy, false).is_empty(), "{:?}", s.arms);

        // An operator's removal is not remembered.
        assert!(s.remove("hot"));
        assert!(s.memory.get("hot").is_none());
    }

    #[test]
    fn policies_that_do_not_screen_keep_no_memory() {
        let config = RotationConfig {
            arms: 4,
            round_impressions: 10,
            policy: PriorPolicy::POST2015,
            cooldown_rounds: 0,
        };
        let catalog: Vec<String> = (0..20).map(|i| format!("i{i}")).collect();
        let mut s = ArmSet::new(catalog[..4].to_vec(), &config.policy);
        let mut rng = SmallRng::seed_from_u64(5);
        for _ in 0..10 {
            let items: Vec<String> = s.arms.iter().map(|a| a.item.clone()).collect();
            for item in &items {
                s.record(item, 5, 1);
            }
            s.rotate_from(&config, &catalog, &mut rng);
        }
        assert!(s.history.pushed >= 10);
        assert!(s.memory.is_empty());
        assert_eq!(
            s.prefer_fresh(&config.policy, &["a", "b"], &mut rng),
            vec![0, 1]
        );
    }

    #[test]
    fn sets_stored_before_screening_still_load() {
        let old = r#"{"round":3,"arms":[],"round_impressions":0,"retired":[],"history":{"arms":[[1,10]]}}"#;
        let s: ArmSet = serde_json::from_str(old).unwrap();
        assert_eq!((s.weak_fit, s.history.pushed), (None, 0));
        assert_eq!(s.history.arms.len(), 1);
    }

    #[test]
    fn features_travel_with_arms_into_the_history_and_state() {
        let policy: PriorPolicy = "carry-weak20-screen0.3:0.7+features".parse().unwrap();
        let cat = |c: &str| Features::new([("category", c)]);
        let mut s = ArmSet::with_features(
            vec![("a".into(), cat("x")), ("b".into(), Features::default())],
            &policy,
        );
        assert_eq!(s.features.len(), 1);
        s.record("a", 100, 3);
        s.record("b", 100, 1);
        assert!(s.remove("a"));
        assert!(s.features.is_empty());
        assert_eq!(s.history.with_features().last().unwrap().0, &cat("x"));
        // Stored and loaded: equal (the fit cache is not part of the state).
        s.add_fresh_with_features([("c".to_string(), cat("y"))], &policy);
        let json = serde_json::to_string(&s).unwrap();
        let back: ArmSet = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        // A set without features stores nothing new.
        let plain = ArmSet::new(vec!["a".into()], &PriorPolicy::RESET);
        assert!(!serde_json::to_string(&plain).unwrap().contains("features"));
    }

    #[test]
    fn the_weak_prior_keeps_the_fitted_mean_and_is_refitted_in_steps() {
        let mut s = ArmSet::new(Vec::new(), &PriorPolicy::RESET);
        for k in 0..40u64 {
            s.history.push(k % 5, 100);
        }
        let policy: PriorPolicy = "carry-weak20-screen0.2:0.7".parse().unwrap();
        let full = s.fresh_prior(&PriorPolicy::CARRY_EB);
        assert!(full.alpha + full.beta > 20.0, "{full:?}");
        let weak = s.fresh_prior(&policy);
        assert!((weak.alpha + weak.beta - 20.0).abs() < 1e-9);
        assert!((weak.mean() - full.mean()).abs() < 1e-12);
        s.add_fresh(["a".to_string()], &policy);
        let cached = s.weak_fit.unwrap();
        // Fewer than WEAK_REFIT_EVERY new arms: the cached fit stands.
        for _ in 1..WEAK_REFIT_EVERY {
            s.history.push(50, 100);
        }
        s.add_fresh(["b".to_string()], &policy);
        assert_eq!(s.weak_fit.unwrap(), cached);
        s.history.push(50, 100);
        s.add_fresh(["c".to_string()], &policy);
        assert!(s.weak_fit.unwrap().1.mean() > cached.1.mean());
    }

    #[test]
    fn round_end_also_drops_survivors_far_behind() {
        let config = screening();
        // A survivor whose carried evidence puts it near 0.03: no new evidence this round, so
        // not retired mid-round, but at the round's end it has no chance of beating the bar.
        let s = set(
            vec![
                arm("lead", Posterior::UNIFORM, 300, 2000, 1),
                arm(
                    "old",
                    Posterior {
                        alpha: 30.0,
                        beta: 970.0,
                    },
                    0,
                    0,
                    1,
                ),
                arm("new", WEAK, 0, 0, 2),
            ],
            2,
        );
        assert!(s.behind(&config.policy, false).is_empty());
        let plan = s.plan_rotation(&config, &mut SmallRng::seed_from_u64(1));
        assert_eq!(plan.retire, vec![1]);
        assert_eq!(plan.keep, vec![0, 2]);
        assert_eq!(plan.fresh_needed, 2);
    }

    #[test]
    fn screening_round_ends_keep_every_arm_not_behind_up_to_n() {
        let mut config = screening();
        // Four arms, none behind: all stay, best mean first, and nothing is fetched.
        let s = set(
            vec![
                arm("a", Posterior::UNIFORM, 30, 200, 1),
                arm("b", Posterior::UNIFORM, 36, 200, 1),
                arm("c", WEAK, 0, 0, 1),
                arm("d", Posterior::UNIFORM, 33, 200, 1),
            ],
            1,
        );
        assert!(s.behind(&config.policy, true).is_empty());
        let plan = s.plan_rotation(&config, &mut SmallRng::seed_from_u64(1));
        assert_eq!(plan.keep, vec![1, 3, 0, 2]);
        assert!(plan.retire.is_empty());
        assert_eq!(plan.fresh_needed, 0);
        // An operator lowered n to 2: the best two by mean stay.
        config.arms = 2;
        let plan = s.plan_rotation(&config, &mut SmallRng::seed_from_u64(1));
        assert_eq!(plan.keep, vec![1, 3]);
        assert_eq!(plan.retire, vec![0, 2]);
        assert_eq!(plan.fresh_needed, 0);
        // Rotating keeps the round's evidence (decayed) and starts the next round.
        let mut s = s;
        config.arms = 4;
        let plan = s.plan_rotation(&config, &mut SmallRng::seed_from_u64(1));
        let summary = s.rotate(&config, &plan, Vec::new());
        assert_eq!((s.round, s.arms.len()), (2, 4));
        assert!(summary.retired.is_empty() && summary.added.is_empty());
    }

    #[test]
    fn the_leader_always_stays_and_other_rankings_never_screen() {
        let config = screening();
        let same = |i: &str| arm(i, Posterior::UNIFORM, 0, 500, 1);
        let s = set(vec![same("a"), same("b")], 1);
        assert!(s.behind(&config.policy, true).is_empty());
        let s = set(
            vec![
                arm("lead", Posterior::UNIFORM, 300, 2000, 1),
                arm("dud", WEAK, 0, 1000, 1),
            ],
            1,
        );
        assert_eq!(s.behind(&config.policy, false), vec![1]);
        for p in [
            PriorPolicy::POST2015,
            PriorPolicy::RESET,
            PriorPolicy::CARRY_EB_RACE,
        ] {
            assert!(s.behind(&p, false).is_empty(), "{p}");
        }
    }

    /// Ville's inequality bounds the false retirements: for an arm whose rate is drawn from
    /// its prior given that it beats the bar, 1 / (tail now / tail at entry) is a non-negative
    /// martingale of mean 1, so the ratio ever falls below eps with probability at most eps.
    #[test]
    fn good_arms_are_rarely_retired_and_bad_ones_are() {
        let config = screening();
        let leader = arm(
            "lead",
            Posterior {
                alpha: 1.0,
                beta: 1.0,
            },
            10_000,
            100_000,
            1,
        );
        let bar = {
            let p = config.policy.posterior(leader.prior, 10_000, 100_000);
            p.mean() - p.variance().sqrt()
        };
        let mut rng = SmallRng::seed_from_u64(2015);
        let trials = 300;
        let run = |good: bool, rng: &mut SmallRng| -> bool {
            let theta = loop {
                let t = WEAK.sample(rng);
                if (t > bar) == good && (good || t < bar / 2.0) {
                    break t;
                }
            };
            let mut s = set(vec![leader.clone(), arm("c", WEAK, 0, 0, 1)], 1);
            for _ in 0..1500 {
                let click = rng.random::<f64>() < theta;
                s.record("c", 1, u64::from(click));
                // Only the challenger counts: once it leads, the old leader may go instead.
                if s.behind(&config.policy, false).contains(&1) {
                    return true;
                }
            }
            false
        };
        let false_retired = (0..trials).filter(|_| run(true, &mut rng)).count();
        // At most eps = 0.1 in expectation: 30 of 300, binomial sd about 5.2; 3 sd above.
        assert!(false_retired <= 46, "{false_retired} of {trials}");
        // Arms below half the bar: 1,500 impressions is ample evidence against them.
        let caught = (0..trials).filter(|_| run(false, &mut rng)).count();
        assert!(caught >= trials * 9 / 10, "{caught} of {trials}");
    }
}
