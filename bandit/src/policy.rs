//! Prior policies: what survivors keep and what fresh items start from when a round ends.

use std::fmt;
use std::str::FromStr;

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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FreshPrior {
    /// Beta(1, 1).
    Uniform,
    /// A Beta fitted by moments to the click-through rates of the arms seen so far, falling
    /// back to Beta(1, 1) with too little data (see [`crate::history::ArmHistory::fit`]).
    EmpiricalBayes,
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

/// A complete prior policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PriorPolicy {
    /// Treatment of survivors at rotation.
    pub survivors: SurvivorPrior,
    /// Prior of fresh items.
    pub fresh: FreshPrior,
    /// Counts-to-posterior rule.
    pub scoring: Scoring,
}

/// A policy name that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("unknown prior policy {0:?}: expected one of post2015, reset, carry[:DECAY], eb, carry-eb[:DECAY], default")]
pub struct UnknownPolicy(pub String);

impl PriorPolicy {
    /// The 2015 post: Beta(clicks or 1, views or 1), everything reset every round.
    pub const POST2015: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Reset,
        fresh: FreshPrior::Uniform,
        scoring: Scoring::Post2015,
    };
    /// The Divolte shop's: Beta(clicks + 1, misses + 1), reset every round.
    pub const RESET: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Reset,
        fresh: FreshPrior::Uniform,
        scoring: Scoring::Standard,
    };
    /// Survivors keep their evidence; fresh items get a prior fitted from history.
    pub const CARRY_EB: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Carry { decay: 1.0 },
        fresh: FreshPrior::EmpiricalBayes,
        scoring: Scoring::Standard,
    };

    /// `carry-eb:0.7`: survivors keep 70% of their evidence, fresh items get the fitted prior.
    pub const CARRY_EB_07: PriorPolicy = PriorPolicy {
        survivors: SurvivorPrior::Carry { decay: 0.7 },
        fresh: FreshPrior::EmpiricalBayes,
        scoring: Scoring::Standard,
    };

    /// The project's default, chosen by offline evaluation (`collector-bridge evaluate`):
    /// lowest mean regret relative to post2015 over catalogs of 500 and 5,000 items with
    /// delays 0 and 500. The decay keeps survivors from locking the set once their evidence
    /// is large, so fresh items can still displace them.
    pub fn default_policy() -> PriorPolicy {
        PriorPolicy::CARRY_EB_07
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

fn parse_decay(name: &str, decay: Option<&str>) -> Result<f64, UnknownPolicy> {
    match decay {
        None => Ok(1.0),
        Some(d) => match d.parse::<f64>() {
            Ok(d) if d > 0.0 && d <= 1.0 => Ok(d),
            _ => Err(UnknownPolicy(format!("{name} (decay must be in (0, 1])"))),
        },
    }
}

impl FromStr for PriorPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
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
        match base {
            "post2015" => fixed(PriorPolicy::POST2015),
            "reset" | "shop" => fixed(PriorPolicy::RESET),
            "default" => fixed(PriorPolicy::default_policy()),
            "eb" => fixed(PriorPolicy {
                fresh: FreshPrior::EmpiricalBayes,
                ..PriorPolicy::RESET
            }),
            "carry" => Ok(PriorPolicy {
                survivors: SurvivorPrior::Carry {
                    decay: parse_decay(s, decay)?,
                },
                ..PriorPolicy::RESET
            }),
            "carry-eb" => Ok(PriorPolicy {
                survivors: SurvivorPrior::Carry {
                    decay: parse_decay(s, decay)?,
                },
                ..PriorPolicy::CARRY_EB
            }),
            _ => Err(UnknownPolicy(s.to_string())),
        }
    }
}

impl fmt::Display for PriorPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.scoring == Scoring::Post2015 {
            return f.write_str("post2015");
        }
        let eb = self.fresh == FreshPrior::EmpiricalBayes;
        match (self.survivors, eb) {
            (SurvivorPrior::Reset, false) => f.write_str("reset"),
            (SurvivorPrior::Reset, true) => f.write_str("eb"),
            (SurvivorPrior::Carry { decay }, eb) => {
                f.write_str(if eb { "carry-eb" } else { "carry" })?;
                if decay != 1.0 {
                    write!(f, ":{decay}")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        ] {
            let p: PriorPolicy = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
        }
        assert_eq!("shop".parse::<PriorPolicy>().unwrap(), PriorPolicy::RESET);
        assert_eq!(
            "default".parse::<PriorPolicy>().unwrap(),
            "carry-eb:0.7".parse::<PriorPolicy>().unwrap()
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
        ] {
            assert!(name.parse::<PriorPolicy>().is_err(), "{name}");
        }
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
