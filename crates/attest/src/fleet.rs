//! Fleet trust state: one summary per device, the list an operator filters and pages, the
//! counts by state and by (class, version), the outliers of each class, and the decision to
//! quarantine a device without an operator. Pure: the server keeps the index in memory and
//! feeds it every change of a device record.

use crate::policy::{ClassPolicy, Policy, Trigger};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};

/// A device's trust state, as the fleet view names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum State {
    /// The last verdict is TRUSTED and fresh.
    Trusted,
    /// The last verdict is UNTRUSTED.
    Untrusted,
    /// The last TRUSTED verdict is older than the class's interval.
    Stale,
    /// Cut off from the core until an operator releases it.
    Quarantined,
    /// Never attested (enrolment pending, or no verdict yet).
    Unknown,
}

impl State {
    /// Every state, in the order reports list them.
    pub const ALL: [State; 5] = [
        State::Trusted,
        State::Untrusted,
        State::Stale,
        State::Quarantined,
        State::Unknown,
    ];

    /// Its name (`TRUSTED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            State::Trusted => "TRUSTED",
            State::Untrusted => "UNTRUSTED",
            State::Stale => "STALE",
            State::Quarantined => "QUARANTINED",
            State::Unknown => "UNKNOWN",
        }
    }

    /// Parses a state name (any case).
    pub fn parse(s: &str) -> Option<State> {
        State::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s))
    }
}

/// A firmware image as the fleet view knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Image {
    /// SHA-256, hex.
    pub sha256: String,
    /// Version, when known.
    pub version: Option<String>,
    /// Security version, when known.
    pub security_version: Option<u64>,
    /// Who signed it, when the provenance store knows it.
    #[serde(default)]
    pub signers: Vec<String>,
    /// `provenance`, `pinned`, `unknown` (measured) or `reported` (an install report).
    pub source: String,
}

/// One device's summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Device ID.
    pub id: String,
    /// Device class.
    pub class: String,
    /// Hardware IDs.
    pub hardware_ids: Vec<String>,
    /// NF instance IDs running on it.
    pub nf_instance_ids: Vec<String>,
    /// The enrolment is not activated yet.
    pub pending: bool,
    /// The last verdict: `Some(true)` TRUSTED, `Some(false)` UNTRUSTED, `None` none yet.
    pub verdict: Option<bool>,
    /// When the last verdict was made.
    pub verdict_at: Option<i64>,
    /// When the device last attested TRUSTED.
    pub last_trusted_at: Option<i64>,
    /// Quarantined (and why).
    pub quarantine: Option<String>,
    /// The image the last quote measured.
    pub measured: Option<Image>,
    /// The image the last install report named.
    pub installed: Option<Image>,
    /// The earliest expiry of the certificates bound to it, when known.
    pub cert_not_after: Option<i64>,
}

impl Entry {
    /// The state at `now` under `interval` (seconds; `None`: the class is unknown).
    pub fn state(&self, now: i64, interval: Option<u64>) -> State {
        if self.quarantine.is_some() {
            return State::Quarantined;
        }
        match self.verdict {
            _ if self.pending => State::Unknown,
            None => State::Unknown,
            Some(false) => State::Untrusted,
            Some(true) => match (self.last_trusted_at, interval) {
                (Some(t), Some(i)) if now.saturating_sub(t) > i as i64 => State::Stale,
                _ => State::Trusted,
            },
        }
    }

    /// The version it runs: measured, else reported.
    pub fn version(&self) -> Option<&str> {
        self.measured
            .as_ref()
            .and_then(|i| i.version.as_deref())
            .or_else(|| self.installed.as_ref().and_then(|i| i.version.as_deref()))
    }
}

/// What a fleet list keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only this class.
    pub class: Option<String>,
    /// Only this state.
    pub state: Option<State>,
    /// Only this version.
    pub version: Option<String>,
    /// Only devices with a certificate expiring within this many seconds of now.
    pub expiring_within: Option<i64>,
    /// Only devices whose measured image this signer signed.
    pub signer: Option<String>,
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<'a> {
    /// The devices, in ID order.
    pub devices: Vec<(&'a Entry, State)>,
    /// The ID to pass as `after` for the next page, when there is one.
    pub next: Option<String>,
}

/// Counts by state and by (class, version).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Devices in all.
    pub total: usize,
    /// By state.
    pub by_state: BTreeMap<State, usize>,
    /// By class, then state.
    pub by_class_state: BTreeMap<String, BTreeMap<State, usize>>,
    /// By class, then version (`unknown` when none is known).
    pub by_class_version: BTreeMap<String, BTreeMap<String, usize>>,
}

/// Why a device stands out in its class.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outlier {
    /// Device ID.
    pub device: String,
    /// Its class.
    pub class: String,
    /// The image it runs (measured SHA-256).
    pub image: String,
    /// What most of its class runs, when a strict plurality runs one image.
    pub majority: Option<String>,
    /// The class's known-good image, when configured.
    pub known_good: Option<String>,
    /// `image.minority`, `image.not_known_good`, `image.no_provenance`.
    pub rules: Vec<&'static str>,
}

/// Outlier rule names.
pub mod rule {
    /// The image differs from what most of the class runs.
    pub const MINORITY: &str = "image.minority";
    /// The image differs from the class's known-good image.
    pub const NOT_KNOWN_GOOD: &str = "image.not_known_good";
    /// No provenance statement names the image.
    pub const NO_PROVENANCE: &str = "image.no_provenance";
}

/// The fleet: every device's summary, by ID, and running tallies for counts.
#[derive(Debug, Default)]
pub struct Fleet {
    devices: BTreeMap<String, Entry>,
    tally: Tally,
}

/// Counts kept up to date by every change, so that counting does not scan the fleet. Only
/// STALE depends on the clock: TRUSTED devices are tallied by when they last attested
/// TRUSTED, and those older than the class's interval are counted STALE at read time.
#[derive(Debug, Default)]
struct Tally {
    /// Devices by (class, state) for the states that do not depend on the clock.
    fixed: HashMap<(String, State), usize>,
    /// TRUSTED-verdict devices by class, then last TRUSTED time (`i64::MAX`: unknown).
    trusted: HashMap<String, BTreeMap<i64, usize>>,
    /// Devices by (class, version).
    versions: HashMap<(String, String), usize>,
}

fn bump<K: std::hash::Hash + Eq>(m: &mut HashMap<K, usize>, k: K, add: bool) {
    if add {
        *m.entry(k).or_default() += 1;
    } else if let std::collections::hash_map::Entry::Occupied(mut o) = m.entry(k) {
        *o.get_mut() -= 1;
        if *o.get() == 0 {
            o.remove();
        }
    }
}

impl Tally {
    fn apply(&mut self, e: &Entry, add: bool) {
        // The state with no clock: TRUSTED here may be STALE at read time.
        let st = e.state(i64::MIN / 2, None);
        if st == State::Trusted {
            let m = self.trusted.entry(e.class.clone()).or_default();
            let k = e.last_trusted_at.unwrap_or(i64::MAX);
            if add {
                *m.entry(k).or_default() += 1;
            } else if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        } else {
            bump(&mut self.fixed, (e.class.clone(), st), add);
        }
        let v = e.version().unwrap_or("unknown").to_string();
        bump(&mut self.versions, (e.class.clone(), v), add);
    }
}

impl Fleet {
    /// An empty fleet.
    pub fn new() -> Self {
        Fleet::default()
    }

    /// Adds or replaces a device.
    pub fn upsert(&mut self, e: Entry) {
        self.tally.apply(&e, true);
        if let Some(old) = self.devices.insert(e.id.clone(), e) {
            self.tally.apply(&old, false);
        }
    }

    /// Removes a device.
    pub fn remove(&mut self, id: &str) {
        if let Some(old) = self.devices.remove(id) {
            self.tally.apply(&old, false);
        }
    }

    /// A device.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.devices.get(id)
    }

    /// Devices in all.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// No devices.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// Every device, in ID order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.devices.values()
    }

    /// Up to `limit` devices after `after` (exclusive) that `f` keeps, in ID order.
    pub fn list(
        &self,
        policy: &Policy,
        f: &Filter,
        after: Option<&str>,
        limit: usize,
        now: i64,
    ) -> Page<'_> {
        use std::ops::Bound::*;
        let start = after.map_or(Unbounded, |a| Excluded(a.to_string()));
        let mut out = Vec::new();
        let mut next = None;
        let intervals = Intervals::of(policy);
        for e in self.devices.range((start, Unbounded)).map(|(_, e)| e) {
            if f.class.as_ref().is_some_and(|c| c != &e.class) {
                continue;
            }
            if f.version.as_ref().is_some_and(|v| e.version() != Some(v)) {
                continue;
            }
            if let Some(w) = f.expiring_within {
                if e.cert_not_after.is_none_or(|t| t > now.saturating_add(w)) {
                    continue;
                }
            }
            if let Some(s) = &f.signer {
                if !e.measured.as_ref().is_some_and(|i| i.signers.contains(s)) {
                    continue;
                }
            }
            let st = e.state(now, intervals.get(&e.class));
            if f.state.is_some_and(|s| s != st) {
                continue;
            }
            if out.len() == limit {
                next = out.last().map(|(x, _): &(&Entry, State)| x.id.clone());
                break;
            }
            out.push((e, st));
        }
        Page { devices: out, next }
    }

    /// Counts by state and by (class, version) at `now`, from the running tallies: the
    /// cost grows with the classes and versions, not the devices.
    pub fn counts(&self, policy: &Policy, now: i64) -> Counts {
        let intervals = Intervals::of(policy);
        let mut c = Counts {
            total: self.devices.len(),
            ..Counts::default()
        };
        for s in State::ALL {
            c.by_state.insert(s, 0);
        }
        let mut add = |class: &str, st: State, n: usize| {
            if n == 0 {
                return;
            }
            *c.by_state.entry(st).or_default() += n;
            *c.by_class_state
                .entry(class.to_string())
                .or_default()
                .entry(st)
                .or_default() += n;
        };
        for ((class, st), n) in &self.tally.fixed {
            add(class, *st, *n);
        }
        for (class, times) in &self.tally.trusted {
            let all: usize = times.values().sum();
            let stale: usize = match intervals.get(class) {
                Some(i) => times
                    .range(..now.saturating_sub(i as i64))
                    .map(|(_, n)| n)
                    .sum(),
                None => 0,
            };
            add(class, State::Stale, stale);
            add(class, State::Trusted, all - stale);
        }
        for ((class, v), n) in &self.tally.versions {
            c.by_class_version
                .entry(class.clone())
                .or_default()
                .insert(v.clone(), *n);
        }
        c
    }

    /// The devices that stand out in their class: a measured image other than the one a
    /// strict plurality of the class runs, other than the class's known-good image, or one
    /// no provenance statement names. Devices with no measured image are not judged.
    pub fn outliers(&self, policy: &Policy, known_good: &HashMap<String, String>) -> Vec<Outlier> {
        let mut tally: HashMap<&str, HashMap<&str, usize>> = HashMap::new();
        for e in self.devices.values() {
            if let Some(m) = &e.measured {
                *tally
                    .entry(e.class.as_str())
                    .or_default()
                    .entry(m.sha256.as_str())
                    .or_default() += 1;
            }
        }
        let majority: HashMap<&str, &str> = tally
            .iter()
            .filter_map(|(class, images)| {
                let top = images.values().copied().max()?;
                let mut at_top = images.iter().filter(|(_, n)| **n == top);
                let (img, _) = at_top.next()?;
                at_top.next().is_none().then_some((*class, *img))
            })
            .collect();
        let mut out = Vec::new();
        for e in self.devices.values() {
            let Some(m) = &e.measured else { continue };
            let maj = majority.get(e.class.as_str()).copied();
            let kg = known_good
                .get(&e.class)
                .map(String::as_str)
                .or_else(|| policy.class(&e.class).and_then(|c| c.known_good.as_deref()));
            let mut rules = Vec::new();
            if maj.is_some_and(|x| x != m.sha256) {
                rules.push(rule::MINORITY);
            }
            if kg.is_some_and(|x| x != m.sha256) {
                rules.push(rule::NOT_KNOWN_GOOD);
            }
            if m.source == "unknown" {
                rules.push(rule::NO_PROVENANCE);
            }
            if !rules.is_empty() {
                out.push(Outlier {
                    device: e.id.clone(),
                    class: e.class.clone(),
                    image: m.sha256.clone(),
                    majority: maj.map(str::to_string),
                    known_good: kg.map(str::to_string),
                    rules,
                });
            }
        }
        out
    }
}

/// Class intervals, looked up by name without scanning the policy per device.
struct Intervals<'a>(HashMap<&'a str, u64>);

impl<'a> Intervals<'a> {
    fn of(p: &'a Policy) -> Self {
        Intervals(
            p.classes
                .iter()
                .map(|c| (c.name.as_str(), c.interval))
                .collect(),
        )
    }

    fn get(&self, class: &str) -> Option<u64> {
        self.0.get(class).copied()
    }
}

/// Whether the class's policy quarantines a device in `state` at `now` without an operator,
/// and why (the trigger's name and what it saw).
pub fn auto_quarantine(
    class: &ClassPolicy,
    state: State,
    last_trusted_at: Option<i64>,
    now: i64,
) -> Option<String> {
    match state {
        State::Untrusted if class.quarantines_on(Trigger::Untrusted) => {
            Some("policy untrusted: the device attested UNTRUSTED".into())
        }
        State::Stale if class.quarantines_on(Trigger::Stale) => {
            let t = last_trusted_at?;
            let late = now.saturating_sub(t) - class.interval as i64;
            (late > class.stale_grace as i64).then(|| {
                format!(
                    "policy stale: no TRUSTED verdict for {}s (interval {}s, grace {}s)",
                    now.saturating_sub(t),
                    class.interval,
                    class.stale_grace
                )
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy::parse(
            r#"
[[device_classes]]
name = "du"
interval = "10m"
quarantine_on = ["untrusted", "stale"]
stale_grace = "5m"
known_good = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
"#,
        )
        .unwrap()
    }

    fn dev(id: &str, img: &str, source: &str) -> Entry {
        Entry {
            id: id.into(),
            class: "du".into(),
            hardware_ids: vec![],
            nf_instance_ids: vec![],
            pending: false,
            verdict: Some(true),
            verdict_at: Some(1000),
            last_trusted_at: Some(1000),
            quarantine: None,
            measured: Some(Image {
                sha256: img.into(),
                version: Some("1".into()),
                security_version: Some(1),
                signers: vec![],
                source: source.into(),
            }),
            installed: None,
            cert_not_after: None,
        }
    }

    #[test]
    fn stale_quarantine_waits_for_the_grace_period() {
        let p = policy();
        let c = p.class("du").unwrap();
        assert!(auto_quarantine(c, State::Stale, Some(0), 600 + 300).is_none());
        assert!(auto_quarantine(c, State::Stale, Some(0), 600 + 301).is_some());
        assert!(auto_quarantine(c, State::Untrusted, Some(0), 1).is_some());
        assert!(auto_quarantine(c, State::Trusted, Some(0), 1).is_none());
    }

    #[test]
    fn outliers_are_the_minority_the_unknown_and_the_not_known_good() {
        let p = policy();
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let mut f = Fleet::new();
        for i in 0..10 {
            f.upsert(dev(&format!("d{i:02}"), &a, "provenance"));
        }
        f.upsert(dev("odd", &b, "provenance"));
        f.upsert(dev("unknown", &a, "unknown"));
        let o = f.outliers(&p, &HashMap::new());
        let names: Vec<&str> = o.iter().map(|o| o.device.as_str()).collect();
        assert_eq!(names, ["odd", "unknown"]);
        assert_eq!(o[0].rules, [rule::MINORITY, rule::NOT_KNOWN_GOOD]);
        assert_eq!(o[1].rules, [rule::NO_PROVENANCE]);
    }

    #[test]
    fn list_pages_in_id_order_and_filters_by_state() {
        let p = policy();
        let mut f = Fleet::new();
        for i in 0..25 {
            let mut d = dev(&format!("d{i:02}"), &"a".repeat(64), "provenance");
            if i % 5 == 0 {
                d.verdict = Some(false);
            }
            f.upsert(d);
        }
        let all = Filter::default();
        let p1 = f.list(&p, &all, None, 10, 1000);
        assert_eq!(p1.devices.len(), 10);
        assert_eq!(p1.next.as_deref(), Some("d09"));
        let p3 = f.list(&p, &all, Some("d19"), 10, 1000);
        assert_eq!(p3.devices.len(), 5);
        assert_eq!(p3.next, None);
        let bad = Filter {
            state: Some(State::Untrusted),
            ..Filter::default()
        };
        assert_eq!(f.list(&p, &bad, None, 100, 1000).devices.len(), 5);
        let c = f.counts(&p, 1000);
        assert_eq!(c.by_state[&State::Untrusted], 5);
        assert_eq!(c.by_state[&State::Trusted], 20);
        // Ten minutes and a second later every TRUSTED device is STALE.
        assert_eq!(f.counts(&p, 1000 + 601).by_state[&State::Stale], 20);
    }

    /// The running tallies agree with a scan of the devices after replacements and
    /// removals, at any time.
    #[test]
    fn counts_from_tallies_equal_a_full_scan() {
        let p = policy();
        let mut f = Fleet::new();
        for i in 0..300i64 {
            let mut d = dev(&format!("d{:03}", i % 120), &"a".repeat(64), "provenance");
            d.last_trusted_at = Some(i * 10);
            d.verdict = match i % 7 {
                0 => Some(false),
                1 => None,
                _ => Some(true),
            };
            if i % 11 == 0 {
                d.quarantine = Some("x".into());
            }
            if i % 13 == 0 {
                d.measured.as_mut().unwrap().version = Some("2".into());
            }
            f.upsert(d);
            if i % 17 == 0 {
                f.remove(&format!("d{:03}", (i * 7) % 120));
            }
        }
        for now in [0, 1000, 2500, 3100, 10_000] {
            let c = f.counts(&p, now);
            let mut want: BTreeMap<State, usize> = State::ALL.iter().map(|s| (*s, 0)).collect();
            let mut versions: BTreeMap<String, usize> = BTreeMap::new();
            for e in f.iter() {
                *want.entry(e.state(now, Some(600))).or_default() += 1;
                *versions
                    .entry(e.version().unwrap_or("unknown").into())
                    .or_default() += 1;
            }
            assert_eq!(c.by_state, want, "at {now}");
            assert_eq!(c.by_class_version["du"], versions);
            assert_eq!(c.total, f.len());
        }
    }
}
