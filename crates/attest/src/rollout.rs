//! Orchestrated rollouts, decided without I/O: an image goes to a device class in waves (a
//! canary, then percentages); each wave is gated on every device of the wave reporting the
//! install and attesting TRUSTED with the image measured, within a deadline. A failed gate
//! halts the rollout and rolls the failed devices back to the class's known-good image.
//!
//! [`Rollout::step`] is the whole state machine. Every action it answers is recorded in the
//! rollout before it is answered (`told_install`, `told_rollback`), so the caller stores the
//! rollout and the actions' notices together and a repeated step (a retry, a restart)
//! repeats nothing that was done.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Phase {
    /// Waves are being installed.
    Running,
    /// Every wave passed its gate.
    Completed,
    /// A gate failed (or an operator halted it); no further wave is started.
    Halted,
}

/// One device's progress.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// When it was told to install.
    pub told_install: Option<i64>,
    /// When it reported installing the image.
    pub installed: Option<i64>,
    /// When it attested TRUSTED measuring the image.
    pub trusted: Option<i64>,
    /// Why its gate failed.
    pub failed: Option<String>,
    /// When it was told to roll back.
    pub told_rollback: Option<i64>,
}

/// What the registry says of a device now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// The last install it reported: image SHA-256 and when.
    pub installed: Option<(String, i64)>,
    /// The last verdict: TRUSTED or not, when, the image measured last, failed rules.
    pub verdict: Option<(bool, i64, Option<String>, Vec<String>)>,
}

/// What the orchestrator must do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Install the rollout's image on a device.
    Install {
        /// Device ID.
        device: String,
        /// Image SHA-256.
        image_sha256: String,
        /// Its version.
        version: String,
    },
    /// Put a device back on the known-good image.
    Rollback {
        /// Device ID.
        device: String,
        /// The known-good image's SHA-256.
        image_sha256: String,
        /// Why.
        reason: String,
    },
}

/// A rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    /// Its ID.
    pub id: String,
    /// The device class.
    pub class: String,
    /// The image (SHA-256).
    pub image_sha256: String,
    /// Its version.
    pub version: String,
    /// Its security version.
    pub security_version: u64,
    /// What failed devices go back to.
    pub known_good: String,
    /// The devices of each wave, fixed at creation.
    pub waves: Vec<Vec<String>>,
    /// The wave being installed (== `waves.len()` once completed).
    pub wave: usize,
    /// When the current wave started.
    pub wave_started: i64,
    /// Seconds a wave has to pass its gate.
    pub deadline: u64,
    /// Where it is.
    pub phase: Phase,
    /// Why it halted.
    pub halted: Option<String>,
    /// Each device's progress.
    pub devices: BTreeMap<String, Progress>,
    /// When it was created, and by whom.
    pub created_at: i64,
    /// Who created it.
    pub by: String,
}

/// Splits `devices` (in order) into waves: `canary` devices, then each percentage of the
/// whole fleet reached cumulatively (the last wave takes the rest). Empty waves are dropped.
pub fn plan_waves(devices: &[String], canary: usize, percents: &[u32]) -> Vec<Vec<String>> {
    let n = devices.len();
    let mut cuts = vec![canary.min(n)];
    for p in percents {
        let c = (n * (*p).min(100) as usize).div_ceil(100);
        cuts.push(c.max(*cuts.last().unwrap_or(&0)));
    }
    cuts.push(n);
    let mut waves = Vec::new();
    let mut start = 0;
    for c in cuts {
        if c > start {
            waves.push(devices[start..c].to_vec());
            start = c;
        }
    }
    waves
}

impl Rollout {
    /// A new rollout, Running, at wave 0 (nobody told yet: the first step tells the canary).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: String,
        class: String,
        image: (String, String, u64),
        known_good: String,
        waves: Vec<Vec<String>>,
        deadline: u64,
        now: i64,
        by: String,
    ) -> Rollout {
        let devices = waves
            .iter()
            .flatten()
            .map(|d| (d.clone(), Progress::default()))
            .collect();
        Rollout {
            id,
            class,
            image_sha256: image.0,
            version: image.1,
            security_version: image.2,
            known_good,
            waves,
            wave: 0,
            wave_started: now,
            deadline,
            phase: Phase::Running,
            halted: None,
            devices,
            created_at: now,
            by,
        }
    }

    /// The devices of the current wave.
    pub fn current(&self) -> &[String] {
        self.waves.get(self.wave).map_or(&[], Vec::as_slice)
    }

    /// Advances as far as the observations allow; answers the actions to send (each already
    /// recorded as told).
    pub fn step(&mut self, now: i64, observe: &dyn Fn(&str) -> Observation) -> Vec<Action> {
        let mut out = Vec::new();
        while self.phase == Phase::Running {
            let wave = self.current().to_vec();
            if wave.is_empty() {
                self.phase = Phase::Completed;
                break;
            }
            for d in &wave {
                let p = self.devices.entry(d.clone()).or_default();
                if p.told_install.is_none() {
                    p.told_install = Some(now);
                    out.push(Action::Install {
                        device: d.clone(),
                        image_sha256: self.image_sha256.clone(),
                        version: self.version.clone(),
                    });
                }
            }
            let mut all_trusted = true;
            for d in &wave {
                let o = observe(d);
                let target = &self.image_sha256;
                let p = self.devices.entry(d.clone()).or_default();
                let told = p.told_install.unwrap_or(now);
                if p.installed.is_none() {
                    if let Some((img, at)) = &o.installed {
                        if img == target && *at >= told {
                            p.installed = Some(*at);
                        }
                    }
                }
                if let (Some(inst), None, None) = (p.installed, p.trusted, &p.failed) {
                    if let Some((trusted, at, measured, rules)) = &o.verdict {
                        if *at >= inst {
                            if !trusted {
                                p.failed = Some(format!(
                                    "attested UNTRUSTED after installing the image: {}",
                                    rules.join(", ")
                                ));
                            } else if measured.as_deref() == Some(target.as_str()) {
                                p.trusted = Some(*at);
                            }
                        }
                    }
                }
                if p.trusted.is_none() {
                    all_trusted = false;
                }
            }
            let late = now.saturating_sub(self.wave_started) > self.deadline as i64;
            let failed: Vec<String> = wave
                .iter()
                .filter(|d| self.devices.get(*d).is_some_and(|p| p.failed.is_some()))
                .cloned()
                .collect();
            if !failed.is_empty() || (late && !all_trusted) {
                if late {
                    for d in &wave {
                        if let Some(p) = self.devices.get_mut(d) {
                            if p.trusted.is_none() && p.failed.is_none() {
                                p.failed = Some(format!(
                                    "no TRUSTED attestation of the image within the wave's deadline ({}s)",
                                    self.deadline
                                ));
                            }
                        }
                    }
                }
                self.phase = Phase::Halted;
                self.halted = Some(format!(
                    "wave {} failed its gate: {}",
                    self.wave + 1,
                    wave.iter()
                        .filter_map(|d| {
                            let p = self.devices.get(d)?;
                            p.failed.as_ref().map(|f| format!("{d}: {f}"))
                        })
                        .collect::<Vec<_>>()
                        .join("; ")
                ));
                out.extend(self.rollbacks(now));
                break;
            }
            if !all_trusted {
                break;
            }
            self.wave += 1;
            self.wave_started = now;
            if self.wave >= self.waves.len() {
                self.phase = Phase::Completed;
            }
        }
        out
    }

    /// Stops the rollout (an operator): no wave starts; devices that failed are rolled back.
    pub fn halt(&mut self, now: i64, reason: &str) -> Vec<Action> {
        if self.phase != Phase::Running {
            return Vec::new();
        }
        self.phase = Phase::Halted;
        self.halted = Some(reason.to_string());
        self.rollbacks(now)
    }

    /// Rollbacks for the failed devices not yet told (recorded as told).
    fn rollbacks(&mut self, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        for (d, p) in self.devices.iter_mut() {
            if let (Some(f), None) = (&p.failed, p.told_rollback) {
                p.told_rollback = Some(now);
                out.push(Action::Rollback {
                    device: d.clone(),
                    image_sha256: self.known_good.clone(),
                    reason: f.clone(),
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn waves_are_a_canary_then_cumulative_percentages() {
        let w = plan_waves(&ids(10), 1, &[50, 100]);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [1, 4, 5]);
        let w = plan_waves(&ids(5), 1, &[]);
        assert_eq!(w.iter().map(Vec::len).collect::<Vec<_>>(), [1, 4]);
        assert!(plan_waves(&[], 1, &[100]).is_empty());
    }

    fn rollout(n: usize) -> Rollout {
        Rollout::new(
            "r1".into(),
            "du".into(),
            ("new".into(), "6.0".into(), 8),
            "old".into(),
            plan_waves(&ids(n), 1, &[]),
            600,
            100,
            "op".into(),
        )
    }

    #[test]
    fn a_good_image_goes_wave_by_wave_and_no_step_is_repeated() {
        let mut r = rollout(3);
        let mut world: HashMap<String, Observation> = HashMap::new();
        let a = r.step(100, &|d| world.get(d).cloned().unwrap_or_default());
        assert_eq!(a.len(), 1, "only the canary is told");
        // Stepping again tells nobody again.
        assert!(r
            .step(101, &|d| world.get(d).cloned().unwrap_or_default())
            .is_empty());
        world.insert(
            "d0".into(),
            Observation {
                installed: Some(("new".into(), 110)),
                verdict: Some((true, 111, Some("new".into()), vec![])),
            },
        );
        let a = r.step(112, &|d| world.get(d).cloned().unwrap_or_default());
        assert_eq!(a.len(), 2, "the canary passed: the rest is told");
        assert_eq!(r.wave, 1);
        for d in ["d1", "d2"] {
            world.insert(
                d.into(),
                Observation {
                    installed: Some(("new".into(), 120)),
                    verdict: Some((true, 121, Some("new".into()), vec![])),
                },
            );
        }
        assert!(r
            .step(122, &|d| world.get(d).cloned().unwrap_or_default())
            .is_empty());
        assert_eq!(r.phase, Phase::Completed);
    }

    #[test]
    fn an_untrusted_canary_halts_and_is_rolled_back_to_known_good() {
        let mut r = rollout(3);
        r.step(100, &|_| Observation::default());
        let bad = Observation {
            installed: Some(("new".into(), 110)),
            verdict: Some((
                false,
                111,
                Some("evil".into()),
                vec!["measurement.unknown".into()],
            )),
        };
        let a = r.step(112, &|d| {
            if d == "d0" {
                bad.clone()
            } else {
                Observation::default()
            }
        });
        assert_eq!(r.phase, Phase::Halted);
        assert_eq!(
            a,
            vec![Action::Rollback {
                device: "d0".into(),
                image_sha256: "old".into(),
                reason: "attested UNTRUSTED after installing the image: measurement.unknown".into()
            }]
        );
        assert!(
            r.devices["d1"].told_install.is_none(),
            "wave 2 never started"
        );
        // A verdict from before the install does not count.
        let mut r = rollout(2);
        r.step(100, &|_| Observation::default());
        let early = Observation {
            installed: Some(("new".into(), 110)),
            verdict: Some((true, 105, Some("new".into()), vec![])),
        };
        r.step(111, &|_| early.clone());
        assert_eq!(r.wave, 0);
    }

    #[test]
    fn a_wave_past_its_deadline_halts() {
        let mut r = rollout(2);
        r.step(100, &|_| Observation::default());
        assert!(r.step(700, &|_| Observation::default()).is_empty());
        let a = r.step(701, &|_| Observation::default());
        assert_eq!(r.phase, Phase::Halted);
        assert_eq!(a.len(), 1);
    }
}
