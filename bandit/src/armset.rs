//! The rotating arm set: the rounds state machine of the 2015 post, with prior policies.

use std::collections::{HashSet, VecDeque};

use rand::seq::index;
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::history::ArmHistory;
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
    /// How many fresh items would refill the set to n (n - floor(n/2), or more under
    /// [`crate::policy::Ranking::Race`]).
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
}

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
}

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
        let mut set = ArmSet {
            round: 1,
            arms: Vec::new(),
            round_impressions: 0,
            retired: VecDeque::new(),
            history: ArmHistory::default(),
        };
        let prior = set.fresh_prior(policy);
        let mut seen = HashSet::new();
        set.arms = items
            .into_iter()
            .filter(|i| seen.insert(i.clone()))
            .map(|i| Arm::fresh(i, prior, 1))
            .collect();
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
        let prior = self.fresh_prior(policy);
        let mut added = 0;
        for item in items {
            if self.position(&item).is_none() {
                self.arms.push(Arm::fresh(item, prior, self.round));
                added += 1;
            }
        }
        added
    }

    /// Takes `item` out of the set between rounds (an operator's exclusion, a takedown): its
    /// evidence joins the history like a retiree's, the round goes on with the others. Whether
    /// it was in the set.
    pub fn remove(&mut self, item: &str) -> bool {
        let Some(i) = self.position(item) else {
            return false;
        };
        let arm = self.arms.remove(i);
        self.history.push(arm.total_clicks, arm.total_impressions);
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
    /// rule, [`crate::policy::Ranking::Draw`]): the top floor(n/2) survive.
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

    /// Ends the round: applies `plan`, admits `fresh` items (skipping any already in the set
    /// or repeated, and any beyond what refills the set), and starts the next round.
    pub fn rotate(
        &mut self,
        config: &RotationConfig,
        plan: &RotationPlan,
        fresh: Vec<String>,
    ) -> RoundSummary {
        let policy = config.policy;
        let ended = self.round;
        let next = ended + 1;
        let fresh_prior = self.fresh_prior(&policy);

        let mut retired = Vec::with_capacity(plan.retire.len());
        for &i in &plan.retire {
            let arm = &self.arms[i];
            self.history.push(arm.total_clicks, arm.total_impressions);
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
        for item in fresh {
            if arms.len() >= config.arms.max(plan.keep.len()) {
                break;
            }
            if present.insert(item.clone()) {
                added.push(item.clone());
                arms.push(Arm::fresh(item, fresh_prior, next));
            }
        }
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
        }
    }

    /// Ends the round drawing fresh items from an in-memory `catalog` (simulations, tests).
    pub fn rotate_from<R: Rng + ?Sized>(
        &mut self,
        config: &RotationConfig,
        catalog: &[String],
        rng: &mut R,
    ) -> RoundSummary {
        let plan = self.plan_rotation(config, rng);
        let fresh = {
            let excluded = self.excluded(config);
            let candidates = candidate_indices(catalog.len(), plan.fresh_needed, rng);
            let mut fresh = choose_fresh(
                candidates.iter().map(|&i| catalog[i].as_str()),
                &excluded,
                plan.fresh_needed,
            );
            if fresh.len() < plan.fresh_needed {
                // A small catalog: fall back to a scan in random order.
                let all = index::sample(rng, catalog.len(), catalog.len());
                let more = choose_fresh(
                    all.iter()
                        .map(|i| catalog[i].as_str())
                        .filter(|c| !fresh.iter().any(|f| f == c)),
                    &excluded,
                    plan.fresh_needed - fresh.len(),
                );
                fresh.extend(more);
            }
            fresh
        };
        self.rotate(config, &plan, fresh)
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
