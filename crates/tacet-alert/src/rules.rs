//! Alert rules resolved per journey, and the burn-rate math.

use serde::Serialize;
use tacet_core::config::{BurnRuleConfig, RuleOverrides, SilentRateRuleConfig};

/// How urgent an incident is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Page,
    Ticket,
}

/// The rules; one open incident per journey and rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    PageFast,
    PageSlow,
    TicketFast,
    TicketSlow,
    SilentRate,
}

impl RuleKind {
    /// The rule's name in config, incidents and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RuleKind::PageFast => "page_fast",
            RuleKind::PageSlow => "page_slow",
            RuleKind::TicketFast => "ticket_fast",
            RuleKind::TicketSlow => "ticket_slow",
            RuleKind::SilentRate => "silent_rate",
        }
    }

    /// Page or ticket.
    pub fn severity(self) -> Severity {
        match self {
            RuleKind::TicketFast | RuleKind::TicketSlow => Severity::Ticket,
            _ => Severity::Page,
        }
    }
}

const MINUTE: i64 = 60_000;
const HOUR: i64 = 60 * MINUTE;

/// A multiwindow burn-rate rule: fires when both windows burn at least `burn`.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnRule {
    pub kind: RuleKind,
    pub burn: f64,
    pub long_ms: i64,
    pub short_ms: i64,
    pub min_decided: u64,
}

/// The silent-failure-rate rule.
#[derive(Debug, Clone, PartialEq)]
pub struct SilentRule {
    pub threshold: f64,
    pub window_ms: i64,
    pub min_decided: u64,
}

/// The rules in force for one journey.
#[derive(Debug, Clone, PartialEq)]
pub struct JourneyRules {
    pub slo: f64,
    pub burn: Vec<BurnRule>,
    pub silent: Option<SilentRule>,
}

/// Fewest decided journeys a window needs by default: one failure on a quiet
/// journey at 3 a.m. must not page.
pub const DEFAULT_MIN_DECIDED: u64 = 20;
/// Default silent-rate threshold: above what the burn-rate pages catch first
/// on a busy journey, so one burst opens one page.
pub const DEFAULT_SILENT_THRESHOLD: f64 = 0.10;

fn ms(d: std::time::Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

fn burn_rule(
    kind: RuleKind,
    defaults: (f64, i64, i64),
    global: &Option<BurnRuleConfig>,
    own: &Option<BurnRuleConfig>,
) -> Option<BurnRule> {
    let pick = |f: fn(&BurnRuleConfig) -> Option<f64>| own.as_ref().and_then(f).or_else(|| global.as_ref().and_then(f));
    let pick_d = |f: fn(&BurnRuleConfig) -> Option<std::time::Duration>| {
        own.as_ref().and_then(f).or_else(|| global.as_ref().and_then(f)).map(ms)
    };
    let enabled = own
        .as_ref()
        .and_then(|c| c.enabled)
        .or_else(|| global.as_ref().and_then(|c| c.enabled))
        .unwrap_or(true);
    let min = own
        .as_ref()
        .and_then(|c| c.min_decided)
        .or_else(|| global.as_ref().and_then(|c| c.min_decided))
        .unwrap_or(DEFAULT_MIN_DECIDED);
    enabled.then(|| BurnRule {
        kind,
        burn: pick(|c| c.burn).unwrap_or(defaults.0),
        long_ms: pick_d(|c| c.long).unwrap_or(defaults.1),
        short_ms: pick_d(|c| c.short).unwrap_or(defaults.2),
        min_decided: min,
    })
}

fn silent_rule(global: &Option<SilentRateRuleConfig>, own: &Option<SilentRateRuleConfig>) -> Option<SilentRule> {
    let pick =
        |f: fn(&SilentRateRuleConfig) -> Option<f64>| own.as_ref().and_then(f).or_else(|| global.as_ref().and_then(f));
    let enabled = own
        .as_ref()
        .and_then(|c| c.enabled)
        .or_else(|| global.as_ref().and_then(|c| c.enabled))
        .unwrap_or(true);
    enabled.then(|| SilentRule {
        threshold: pick(|c| c.threshold).unwrap_or(DEFAULT_SILENT_THRESHOLD),
        window_ms: own
            .as_ref()
            .and_then(|c| c.window)
            .or_else(|| global.as_ref().and_then(|c| c.window))
            .map_or(5 * MINUTE, ms),
        min_decided: own
            .as_ref()
            .and_then(|c| c.min_decided)
            .or_else(|| global.as_ref().and_then(|c| c.min_decided))
            .unwrap_or(DEFAULT_MIN_DECIDED),
    })
}

impl JourneyRules {
    /// The SRE Workbook defaults, overridden by `[alerts.rules]` and then by
    /// the journey's own `alerts`.
    pub fn resolve(slo: f64, global: &RuleOverrides, own: &RuleOverrides) -> JourneyRules {
        let burn = [
            burn_rule(
                RuleKind::PageFast,
                (14.4, HOUR, 5 * MINUTE),
                &global.page_fast,
                &own.page_fast,
            ),
            burn_rule(
                RuleKind::PageSlow,
                (6.0, 6 * HOUR, 30 * MINUTE),
                &global.page_slow,
                &own.page_slow,
            ),
            burn_rule(
                RuleKind::TicketFast,
                (3.0, 24 * HOUR, 2 * HOUR),
                &global.ticket_fast,
                &own.ticket_fast,
            ),
            burn_rule(
                RuleKind::TicketSlow,
                (1.0, 72 * HOUR, 6 * HOUR),
                &global.ticket_slow,
                &own.ticket_slow,
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        JourneyRules {
            slo,
            burn,
            silent: silent_rule(&global.silent_rate, &own.silent_rate),
        }
    }

    /// Every window the rules look at, in milliseconds, longest first: the
    /// windows are derived from the rules, never listed separately.
    pub fn windows(&self) -> Vec<i64> {
        let mut w: Vec<i64> = self
            .burn
            .iter()
            .flat_map(|r| [r.long_ms, r.short_ms])
            .chain(self.silent.as_ref().map(|s| s.window_ms))
            .collect();
        w.sort_unstable_by(|a, b| b.cmp(a));
        w.dedup();
        w
    }
}

/// How fast the error budget burns: the bad share divided by the allowed bad
/// share (`1 - slo`). 1.0 spends exactly the budget over the SLO period.
pub fn burn_rate(bad: u64, total: u64, slo: f64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (bad as f64 / total as f64) / (1.0 - slo)
}

/// Share of the error budget left over a period with `bad` of `total` bad:
/// 1.0 untouched, 0.0 spent, negative overspent.
pub fn budget_left(bad: u64, total: u64, slo: f64) -> f64 {
    1.0 - burn_rate(bad, total, slo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn burn_rate_by_hand() {
        // SLO 99.9%: the budget is 0.1% bad.
        assert!(close(burn_rate(1, 1000, 0.999), 1.0));
        assert!(close(burn_rate(144, 10_000, 0.999), 14.4), "the page threshold");
        assert!(close(burn_rate(6, 1000, 0.999), 6.0));
        assert!(close(burn_rate(80, 1000, 0.999), 80.0), "an 8% silent burst");
        // SLO 99%: 3% bad burns at 3x.
        assert!(close(burn_rate(3, 100, 0.99), 3.0));
        assert_eq!(burn_rate(0, 0, 0.999), 0.0, "no traffic burns nothing");
    }

    #[test]
    fn budget_left_by_hand_including_exhausted() {
        assert!(close(budget_left(0, 1000, 0.999), 1.0));
        assert!(close(budget_left(1, 2000, 0.999), 0.5));
        assert!(close(budget_left(1, 1000, 0.999), 0.0), "exactly spent");
        assert!(
            close(budget_left(5, 1000, 0.999), -4.0),
            "exhausted: overspent four times over"
        );
    }

    #[test]
    fn workbook_defaults_and_overrides() {
        let global = RuleOverrides::default();
        let r = JourneyRules::resolve(0.999, &global, &RuleOverrides::default());
        let kinds: Vec<_> = r
            .burn
            .iter()
            .map(|b| (b.kind, b.burn, b.long_ms / MINUTE, b.short_ms / MINUTE))
            .collect();
        assert_eq!(
            kinds,
            [
                (RuleKind::PageFast, 14.4, 60, 5),
                (RuleKind::PageSlow, 6.0, 360, 30),
                (RuleKind::TicketFast, 3.0, 1440, 120),
                (RuleKind::TicketSlow, 1.0, 4320, 360),
            ]
        );
        assert_eq!(
            r.windows().iter().map(|w| w / MINUTE).collect::<Vec<_>>(),
            [4320, 1440, 360, 120, 60, 30, 5]
        );
        let own = RuleOverrides {
            page_fast: Some(BurnRuleConfig {
                burn: Some(10.0),
                ..Default::default()
            }),
            ticket_slow: Some(BurnRuleConfig {
                enabled: Some(false),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = JourneyRules::resolve(0.99, &global, &own);
        assert_eq!(r.burn[0].burn, 10.0);
        assert_eq!(r.burn.len(), 3);
        assert_eq!(r.windows()[0] / MINUTE, 1440, "a disabled rule's windows are not kept");
    }
}
