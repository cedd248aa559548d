//! Prior policies: what survivors keep, what fresh items start from, and how the arms are
//! ranked when a round ends.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::Posterior;

/// What happens to a surviving arm's evidence when a new round starts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SurvivorPrior {
    /// Clear the counts and start again from the fresh-item prior (the 2015 post).
    Reset,
    /// Keep the evidence, shrunk toward the fresh-item prior by `decay` in (0, 1]
    /// (1 keeps it exactly).
    Carry {
        /// Fraction of the evidence kept.
        decay: f64,
    },
}

/// The prior a fresh item enters the arm set with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshPrior {
    /// Beta(1, 1).
    Uniform,
    /// A Beta fitted by moments to the click-through rates of the arms seen so far, falling
    /// back to Beta(1, 1) with too little data (see [`crate::history::ArmHistory::fit`]).
    EmpiricalBayes,
    /// The fitted Beta's mean with its strength (alpha + beta) capped at `strength`: as
    /// well calibrated in the mean, but wide enough that Thompson sampling tries a fresh
    /// item promptly instead of starving it behind a leader far above the catalog's mean.
    WeakEmpiricalBayes {
        /// Upper bound on alpha + beta of the fresh prior.
        strength: f64,
    },
}

/// How counts turn into a posterior.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scoring {
    /// prior + Beta(clicks, impressions - clicks).
    Standard,
    /// The 2015 post's Beta(clicks or 1, impressions or 1), ignoring the prior.
    Post2015,
}

/// How the arms are ranked at rotation to decide which survive (floor(n/2) of them, fewer
/// under [`Ranking::Race`], every arm not confidently behind under [`Ranking::Screen`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Ranking {
    /// One posterior draw each (the 2015 post).
    #[default]
    Draw,
    /// Posterior mean: keep the arms expected to be best, retire the ones with the lowest
    /// expected click-through rate.
    Mean,
    /// The `q`-quantile of the posterior, q in (0, 1): below 0.5 favours arms with
    /// evidence, above 0.5 favours arms still uncertain.
    Quantile {
        /// The quantile level.
        q: f64,
    },
    /// Posterior mean, and retire on evidence: of the top floor(n/2) by mean, an arm also
    /// leaves when the probability that its click-through rate exceeds the leader's
    /// posterior mean is below `eps`. The leader always stays, so between 1 and floor(n/2)
    /// arms survive and the freed slots screen more fresh items.
    Race {
        /// Probability below which a trailing arm is retired, in (0, 0.5).
        eps: f64,
    },
    /// Continuous screening (see [`crate::ArmSet::retire_behind`]). After every batch an
    /// arm is retired, and its slot refilled at once, when the evidence has cut its posterior
    /// probability of beating the bar (the best lower bound, mean - sd, among the arms) to
    /// below `eps` times what it was when the round began; so a weak prior alone never
    /// condemns a fresh arm, and by Ville's inequality an arm that truly beats the bar is
    /// retired so with probability at most `eps`. Under feature priors a fresh arm's start
    /// is taken under the prior without its features, so a category predicted poor can
    /// condemn it before any impression: the bound above then holds only for items whose
    /// features did not lower their odds. At a round's end every arm stays (up to n),
    /// best mean first, except those screened out and any survivor from an earlier round whose
    /// probability of beating the bar is below `eps`: the round end only moves the evidence
    /// (the carry decay) and the cool-down on, the refill being continuous. A screening set
    /// remembers the arms it retires ([`crate::memory`]): one drawn again comes back with its
    /// evidence and leaves again only on a stricter factor, eps to the power stays + 1.
    Screen {
        /// Evidence factor (and, for old survivors, probability) below which an arm is
        /// retired, in (0, 1).
        eps: f64,
    },
}

impl Ranking {
    /// The score of an arm with posterior `p`: higher survives. Only [`Ranking::Draw`] uses
    /// `rng` (one draw).
    pub fn score<R: Rng + ?Sized>(&self, p: &Posterior, rng: &mut R) -> f64 {
        match *self {
            Ranking::Draw => p.sample(rng),
            Ranking::Mean | Ranking::Race { .. } | Ranking::Screen { .. } => p.mean(),
            Ranking::Quantile { q } => p.quantile(q),
        }
    }
}

/// A complete prior policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorPolicy {
    /// Treatment of survivors at rotation.
    pub survivors: SurvivorPrior,
    /// Prior of fresh items.
    pub fresh: FreshPrior,
    /// Counts-to-posterior rule.
    pub scoring: Scoring,
    /// Ranking of the arms at rotation (absent in state stored before it existed: the
    /// 2015 rule, one draw each).
    #[serde(default)]
    pub ranking: Ranking,
    /// Whether fresh items' priors are refined by their features (category, photographer)
    /// with [`crate::features::FeatureModel`]; spelled `+features` after the name. Absent
    /// (false) in stored policies from before it existed, and not written when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub features: bool,
}

/// A policy name that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown prior policy {0:?}: expected post2015, shop, default (= screen), race, or one of reset, eb, weakS, carry[:DECAY], carry-eb[:DECAY], carry-weakS[:DECAY] with an optional ranking suffix -mean, -qQ, -raceEPS or -screenEPS before the decay (e.g. carry-eb-mean:0.7, carry-weak20-screen0.2:0.7); default, screen, race and the eb/weak names take a final +features (feature priors, e.g. default+features)")]
pub struct UnknownPolicy(pub String);

impl PriorPolicy {
    /// The 2015 post: Beta(clicks or 1, views or 1), everything reset every round.
    pub const POST2015: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Reset,
        fresh: FreshPrior::Uniform,
        scoring: Scoring::Post2015,
        ranking: Ranking::Draw,
        features: false,
    };
    /// The Divolte shop's: Beta(clicks + 1, misses + 1), reset every round.
    pub const RESET: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Reset,
        fresh: FreshPrior::Uniform,
        scoring: Scoring::Standard,
        ranking: Ranking::Draw,
        features: false,
    };
    /// Survivors keep their evidence; fresh items get a prior fitted from history.
    pub const CARRY_EB: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Carry { decay: 1.0 },
        fresh: FreshPrior::EmpiricalBayes,
        scoring: Scoring::Standard,
        ranking: Ranking::Draw,
        features: false,
    };

    /// `carry-eb:0.7`: survivors keep 70% of their evidence, fresh items get the fitted prior.
    pub const CARRY_EB_07: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Carry { decay: 0.7 },
        fresh: FreshPrior::EmpiricalBayes,
        scoring: Scoring::Standard,
        ranking: Ranking::Draw,
        features: false,
    };

    /// `carry-eb-race0.01:0.7` (also named `race`; the default before `screen`): as
    /// `carry-eb:0.7`, but the arms are ranked by posterior
    /// mean at rotation and any arm of the top half with less than a 1% chance of beating the
    /// leader's mean is retired too, so its slot screens another fresh item.
    pub const CARRY_EB_RACE: PriorPolicy = PriorPolicy {
        ranking: Ranking::Race { eps: 0.01 },
        ..PriorPolicy::CARRY_EB_07
    };

    /// `carry-weak60-screen0.85:0.85` (also named `screen`, and the default): continuous
    /// screening that recycles challengers fast. Fresh items enter with the fitted prior's
    /// mean at strength 60; an arm leaves after any batch once the evidence has cut its chance
    /// of beating the best lower bound by 15% from its start-of-round value (the slot refilled
    /// at once; with segments, that chance averaged over the segments by traffic, and a
    /// segment's leader stays); at a round's end an arm kept from an earlier round stays only
    /// with at least an 0.85 chance of beating the bar, which in practice keeps the leader
    /// and arms level with it; survivors keep 85% of their evidence. The price of the
    /// throughput: the Ville bound of [`Ranking::Screen`] says only that an arm truly above
    /// the bar is retired with probability at most 0.85, and the catalog's best items come
    /// back by redraw after their cool-down.
    pub const CARRY_WEAK_SCREEN: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Carry { decay: 0.85 },
        fresh: FreshPrior::WeakEmpiricalBayes { strength: 60.0 },
        scoring: Scoring::Standard,
        ranking: Ranking::Screen { eps: 0.85 },
        features: false,
    };

    /// `carry-weak40-screen0.3:0.85`: the default before the current `screen` values, slower
    /// to retire (a 70% drop in an arm's chance; an older arm stays at a round's end with a
    /// 0.3 chance); kept for comparison.
    pub const CARRY_WEAK40_SCREEN: PriorPolicy = PriorPolicy {
        fresh: FreshPrior::WeakEmpiricalBayes { strength: 40.0 },
        ranking: Ranking::Screen { eps: 0.3 },
        ..PriorPolicy::CARRY_WEAK_SCREEN
    };

    /// The project's default, chosen by offline evaluation (`collector-bridge evaluate`,
    /// catalogs of 500 and 5,000 items, CTRs from Beta(2, 60), n = 8, X = 2,000, delays 0
    /// and 500, 40 paired seeds; `make evaluate-long`): `screen`. Its values were tuned on
    /// other seeds (101-120, then 201-300) and had lower mean regret than the earlier
    /// screening default (`carry-weak40-screen0.3:0.85`) and than `race`
    /// (`carry-eb-race0.01:0.7`) on the published workloads (docs/BENCHMARKS.md).
    pub fn default_policy() -> PriorPolicy {
        PriorPolicy::CARRY_WEAK_SCREEN
    }

    /// The posterior of an arm with this policy's scoring rule.
    pub fn posterior(&self, prior: Posterior, clicks: u64, impressions: u64) -> Posterior {
        match self.scoring {
            Scoring::Standard => prior.observe(clicks, impressions),
            Scoring::Post2015 => Posterior {
                alpha: clicks.max(1) as f64,
                beta: impressions.max(1) as f64,
            },
        }
    }
}

impl Default for PriorPolicy {
    fn default() -> Self {
        PriorPolicy::default_policy()
    }
}

/// The name suffix that turns feature priors on.
pub const FEATURES_SUFFIX: &str = "+features";

fn parse_decay(name: &str, decay: Option<&str>) -> Result<f64, UnknownPolicy> {
    match decay {
        None => Ok(1.0),
        Some(d) => match d.parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 1.0 => Ok(d),
            _ => Err(UnknownPolicy(format!("{name} (decay must be in (0, 1])"))),
        },
    }
}

/// Splits a ranking suffix (`-mean`, `-qQ`, `-raceEPS`) off a base name.
fn split_ranking(base: &str) -> Result<(&str, Ranking), UnknownPolicy> {
    let Some((head, tail)) = base.rsplit_once('-') else {
        return Ok((base, Ranking::Draw));
    };
    if tail == "mean" {
        return Ok((head, Ranking::Mean));
    }
    if let Some(eps) = tail.strip_prefix("screen") {
        return match eps.parse::<f64>() {
            Ok(eps) if eps > 0.0 && eps < 1.0 => Ok((head, Ranking::Screen { eps })),
            _ => Err(UnknownPolicy(format!(
                "{base} (the screening factor must be in (0, 1))"
            ))),
        };
    }
    if let Some(eps) = tail.strip_prefix("race") {
        return match eps.parse::<f64>() {
            Ok(eps) if eps > 0.0 && eps < 0.5 => Ok((head, Ranking::Race { eps })),
            _ => Err(UnknownPolicy(format!(
                "{base} (the race threshold must be in (0, 0.5))"
            ))),
        };
    }
    if let Some(q) = tail.strip_prefix('q') {
        return match q.parse::<f64>() {
            Ok(q) if q > 0.0 && q < 1.0 => Ok((head, Ranking::Quantile { q })),
            _ => Err(UnknownPolicy(format!(
                "{base} (the quantile must be in (0, 1))"
            ))),
        };
    }
    Ok((base, Ranking::Draw))
}

impl FromStr for PriorPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(head) = s.strip_suffix(FEATURES_SUFFIX) {
            let p: PriorPolicy = head.parse()?;
            // Features refine a fitted prior; the uniform one and the 2015 scoring (which
            // ignores priors) have nothing to refine.
            if p.features || p.scoring == Scoring::Post2015 || p.fresh == FreshPrior::Uniform {
                return Err(UnknownPolicy(format!(
                    "{s} (+features needs a fitted fresh prior: default, eb, carry-eb or weakS, once)"
                )));
            }
            return Ok(PriorPolicy {
                features: true,
                ..p
            });
        }
        let (base, decay) = match s.split_once(':') {
            Some((b, d)) => (b, Some(d)),
            None => (s, None),
        };
        let fixed = |p: PriorPolicy| {
            if decay.is_some() {
                Err(UnknownPolicy(format!(
                    "{s} (only carry policies take a decay)"
                )))
            } else {
                Ok(p)
            }
        };
        // The 2015 names and the named policies take no ranking suffix.
        match base {
            "post2015" => return fixed(PriorPolicy::POST2015),
            "shop" => return fixed(PriorPolicy::RESET),
            "default" => return fixed(PriorPolicy::default_policy()),
            "screen" => return fixed(PriorPolicy::CARRY_WEAK_SCREEN),
            "race" => return fixed(PriorPolicy::CARRY_EB_RACE),
            _ => {}
        }
        let (base, ranking) = split_ranking(base)?;
        let policy = match base {
            "reset" => fixed(PriorPolicy::RESET)?,
            "eb" => fixed(PriorPolicy {
                fresh: FreshPrior::EmpiricalBayes,
                ..PriorPolicy::RESET
            })?,
            "carry" => PriorPolicy {
                survivors: SurvivorPrior::Carry {
                    decay: parse_decay(s, decay)?,
                },
                ..PriorPolicy::RESET
            },
            "carry-eb" => PriorPolicy {
                survivors: SurvivorPrior::Carry {
                    decay: parse_decay(s, decay)?,
                },
                ..PriorPolicy::CARRY_EB
            },
            _ => {
                // `weakS` / `carry-weakS`: the fitted prior's mean with strength at most S.
                let (carry, strength) = match base.strip_prefix("carry-weak") {
                    Some(s) => (true, s),
                    None => match base.strip_prefix("weak") {
                        Some(s) => (false, s),
                        None => return Err(UnknownPolicy(s.to_string())),
                    },
                };
                let fresh = match strength.parse::<f64>() {
                    Ok(strength) if strength.is_finite() && strength > 0.0 => {
                        FreshPrior::WeakEmpiricalBayes { strength }
                    }
                    _ => {
                        return Err(UnknownPolicy(format!(
                            "{s} (the weak prior's strength must be a number > 0)"
                        )))
                    }
                };
                let survivors = if carry {
                    SurvivorPrior::Carry {
                        decay: parse_decay(s, decay)?,
                    }
                } else {
                    fixed(PriorPolicy::RESET)?.survivors
                };
                PriorPolicy {
                    survivors,
                    fresh,
                    ..PriorPolicy::RESET
                }
            }
        };
        Ok(PriorPolicy { ranking, ..policy })
    }
}

impl fmt::Display for PriorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scoring == Scoring::Post2015 {
            return f.write_str("post2015");
        }
        let carry = matches!(self.survivors, SurvivorPrior::Carry { .. });
        match (carry, self.fresh) {
            (false, FreshPrior::Uniform) => f.write_str("reset")?,
            (false, FreshPrior::EmpiricalBayes) => f.write_str("eb")?,
            (true, FreshPrior::Uniform) => f.write_str("carry")?,
            (true, FreshPrior::EmpiricalBayes) => f.write_str("carry-eb")?,
            (false, FreshPrior::WeakEmpiricalBayes { strength }) => write!(f, "weak{strength}")?,
            (true, FreshPrior::WeakEmpiricalBayes { strength }) => {
                write!(f, "carry-weak{strength}")?
            }
        }
        match self.ranking {
            Ranking::Draw => {}
            Ranking::Mean => f.write_str("-mean")?,
            Ranking::Quantile { q } => write!(f, "-q{q}")?,
            Ranking::Race { eps } => write!(f, "-race{eps}")?,
            Ranking::Screen { eps } => write!(f, "-screen{eps}")?,
        }
        if let SurvivorPrior::Carry { decay } = self.survivors {
            if decay != 1.0 {
                write!(f, ":{decay}")?;
            }
        }
        if self.features {
            f.write_str(FEATURES_SUFFIX)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn names_round_trip() {
        for name in [
            "post2015",
            "reset",
            "eb",
            "carry",
            "carry:0.5",
            "carry-eb",
            "carry-eb:0.9",
            "reset-mean",
            "eb-q0.9",
            "carry-q0.1:0.5",
            "carry-eb-mean",
            "carry-eb-mean:0.7",
            "carry-eb-race0.01:0.7",
            "weak20",
            "weak12.5-screen0.1",
            "carry-weak20-screen0.2:0.7",
            "carry-weak30-mean",
            "carry-eb-screen0.05",
            "eb+features",
            "carry-eb-race0.01:0.7+features",
            "carry-weak20-screen0.3:0.7+features",
            "weak12.5+features",
        ] {
            let p: PriorPolicy = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        assert_eq!("shop".parse::<PriorPolicy>().unwrap(), PriorPolicy::RESET);
        assert_eq!(
            "default".parse::<PriorPolicy>().unwrap(),
            "carry-weak60-screen0.85:0.85"
                .parse::<PriorPolicy>()
                .unwrap()
        );
        assert_eq!(
            "race".parse::<PriorPolicy>().unwrap(),
            "carry-eb-race0.01:0.7".parse::<PriorPolicy>().unwrap()
        );
    }

    #[test]
    fn bad_names_are_rejected() {
        for name in [
            "",
            "carry:0",
            "carry:1.5",
            "carry:x",
            "reset:0.5",
            "thompson",
            "post2015-mean",
            "shop-mean",
            "default-mean",
            "reset-mean:0.5",
            "carry-eb-q0:0.7",
            "carry-eb-q1",
            "carry-eb-qx",
            "carry-eb-race0.5",
            "carry-eb-race0",
            "carry-eb-median",
            "carry-weak0",
            "carry-weak-1",
            "carry-weakx:0.7",
            "weak20:0.7",
            "carry-weak20-screen1:0.7",
            "carry-weak20-screen0:0.7",
            "carry-weak20-screenx",
            "+features",
            "reset+features",
            "carry:0.7+features",
            "post2015+features",
            "shop+features",
            "default+features+features",
            "carry-eb+feature",
        ] {
            assert!(name.parse::<PriorPolicy>().is_err(), "{name}");
        }
    }

    #[test]
    fn ranking_suffixes_parse() {
        let p: PriorPolicy = "carry-eb-mean:0.7".parse().unwrap();
        assert_eq!(
            p,
            PriorPolicy {
                ranking: Ranking::Mean,
                ..PriorPolicy::CARRY_EB_07
            }
        );
        let p: PriorPolicy = "carry-eb-race0.01:0.7".parse().unwrap();
        assert_eq!(p.ranking, Ranking::Race { eps: 0.01 });
        assert_eq!(p.survivors, SurvivorPrior::Carry { decay: 0.7 });
        let p: PriorPolicy = "reset-q0.25".parse().unwrap();
        assert_eq!(p.ranking, Ranking::Quantile { q: 0.25 });
        // The 2015 names keep the 2015 rule.
        for name in ["post2015", "shop", "reset", "carry-eb:0.7"] {
            assert_eq!(name.parse::<PriorPolicy>().unwrap().ranking, Ranking::Draw);
        }
    }

    #[test]
    fn stored_policies_without_a_ranking_still_load() {
        let old = r#"{"survivors":{"kind":"carry","decay":0.7},"fresh":"empirical_bayes","scoring":"standard"}"#;
        let p: PriorPolicy = serde_json::from_str(old).unwrap();
        assert_eq!(p, PriorPolicy::CARRY_EB_07);
        let p = PriorPolicy::default_policy();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PriorPolicy>(&json).unwrap(), p);
    }

    #[test]
    fn feature_policies_parse_and_store() {
        let p: PriorPolicy = "race+features".parse().unwrap();
        assert_eq!(
            p,
            PriorPolicy {
                features: true,
                ..PriorPolicy::CARRY_EB_RACE
            }
        );
        assert_eq!(p.to_string(), "carry-eb-race0.01:0.7+features");
        assert_eq!(
            "default+features".parse::<PriorPolicy>().unwrap(),
            PriorPolicy {
                features: true,
                ..PriorPolicy::default_policy()
            }
        );
        assert!(!PriorPolicy::default_policy().features);
        // New JSON round-trips; old JSON (no field) loads as off and is written unchanged.
        let json = serde_json::to_string(&p).unwrap();
        assert!(json.contains(r#""features":true"#), "{json}");
        assert_eq!(serde_json::from_str::<PriorPolicy>(&json).unwrap(), p);
        let old = r#"{"survivors":{"kind":"carry","decay":0.7},"fresh":"empirical_bayes","scoring":"standard","ranking":{"kind":"race","eps":0.01}}"#;
        let q: PriorPolicy = serde_json::from_str(old).unwrap();
        assert_eq!(q, PriorPolicy::CARRY_EB_RACE);
        assert_eq!(serde_json::to_string(&q).unwrap(), old);
    }

    #[test]
    fn screening_policies_parse_and_store() {
        for name in ["screen", "default", "carry-weak60-screen0.85:0.85"] {
            assert_eq!(
                name.parse::<PriorPolicy>().unwrap(),
                PriorPolicy::CARRY_WEAK_SCREEN
            );
        }
        assert_eq!(
            PriorPolicy::CARRY_WEAK_SCREEN.to_string(),
            "carry-weak60-screen0.85:0.85"
        );
        assert_eq!(
            "carry-weak40-screen0.3:0.85"
                .parse::<PriorPolicy>()
                .unwrap(),
            PriorPolicy::CARRY_WEAK40_SCREEN
        );
        assert!("screen:0.5".parse::<PriorPolicy>().is_err());
        assert!("screen+features"
            .parse::<PriorPolicy>()
            .is_ok_and(|p| p.features));
        let p: PriorPolicy = "carry-weak20-screen0.2:0.7".parse().unwrap();
        assert_eq!(p.fresh, FreshPrior::WeakEmpiricalBayes { strength: 20.0 });
        assert_eq!(p.ranking, Ranking::Screen { eps: 0.2 });
        assert_eq!(p.survivors, SurvivorPrior::Carry { decay: 0.7 });
        assert_eq!(p.scoring, Scoring::Standard);
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PriorPolicy>(&json).unwrap(), p);
        // The unit variants keep their stored spelling.
        assert_eq!(
            serde_json::to_string(&FreshPrior::EmpiricalBayes).unwrap(),
            r#""empirical_bayes""#
        );
    }

    #[test]
    fn ranking_scores() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let p = Posterior {
            alpha: 3.0,
            beta: 27.0,
        };
        assert_eq!(Ranking::Mean.score(&p, &mut rng), 0.1);
        assert_eq!(Ranking::Race { eps: 0.05 }.score(&p, &mut rng), 0.1);
        let lo = Ranking::Quantile { q: 0.1 }.score(&p, &mut rng);
        let hi = Ranking::Quantile { q: 0.9 }.score(&p, &mut rng);
        assert!(lo < p.mean() && p.mean() < hi, "{lo} {hi}");
        assert!((p.cdf(lo) - 0.1).abs() < 1e-9 && (p.cdf(hi) - 0.9).abs() < 1e-9);
    }

    #[test]
    fn post2015_ignores_the_prior() {
        let p = PriorPolicy::POST2015.posterior(
            Posterior {
                alpha: 9.0,
                beta: 9.0,
            },
            0,
            0,
        );
        assert_eq!(p, Posterior::UNIFORM);
        let p = PriorPolicy::POST2015.posterior(Posterior::UNIFORM, 3, 50);
        assert_eq!(
            p,
            Posterior {
                alpha: 3.0,
                beta: 50.0
            }
        );
    }
}
