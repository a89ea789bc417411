//! Failure rates and services per journey.

use tacet_core::catalog::JourneySpec;

/// How often each kind of outcome is injected for one journey.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Share of journeys acked "success" whose required step never happens.
    pub silent_rate: f64,
    /// The group (index into the journey's `complete`) that goes missing.
    pub silent_group: usize,
    /// Of silent failures: share where the step arrives with status error
    /// instead of not at all.
    pub silent_as_error: f64,
    /// Silent failure when the amount is above this (check images).
    pub silent_above_amount: Option<f64>,
    /// Explicit rejections (ack_error).
    pub failed_rate: f64,
    /// No ack at all.
    pub stalled_rate: f64,
    /// Steps without start or ack.
    pub orphan_rate: f64,
    /// Of silent failures: share completed late (within the horizon).
    pub late_share: f64,
    /// Of completed journeys: share with a failed attempt then a retry.
    pub retry_rate: f64,
    /// Median amount (log-normal), and its spread.
    pub amount_median: f64,
    pub amount_sigma: f64,
    /// Relative traffic weight.
    pub weight: f64,
}

impl Scenario {
    /// The seed scenario for a journey of the default config, or generic rates.
    pub fn for_journey(spec: &JourneySpec) -> Scenario {
        let generic = Scenario {
            silent_rate: 0.03,
            silent_group: spec.groups.len().saturating_sub(1),
            silent_as_error: 0.25,
            silent_above_amount: None,
            failed_rate: 0.02,
            stalled_rate: 0.01,
            orphan_rate: 0.004,
            late_share: 0.2,
            retry_rate: 0.02,
            amount_median: 200.0,
            amount_sigma: 1.0,
            weight: 1.0,
        };
        match spec.name.as_str() {
            "funds_transfer" => Scenario {
                silent_rate: 0.08,
                silent_group: 0, // ledger.posted
                weight: 3.5,
                amount_median: 250.0,
                ..generic
            },
            "bill_payment" => Scenario {
                silent_rate: 0.053,
                silent_group: 1, // biller.remitted
                weight: 2.0,
                amount_median: 120.0,
                amount_sigma: 0.8,
                ..generic
            },
            "check_deposit" => Scenario {
                silent_rate: 0.0,
                silent_group: 0, // image.validated
                silent_above_amount: Some(5000.0),
                silent_as_error: 0.0,
                weight: 1.0,
                amount_median: 900.0,
                amount_sigma: 1.3,
                ..generic
            },
            "international_wire" => Scenario {
                silent_rate: 0.02,
                silent_group: 2, // swift.acked
                weight: 0.5,
                amount_median: 18_000.0,
                amount_sigma: 1.1,
                ..generic
            },
            "trade_confirmation" => Scenario {
                silent_rate: 0.14,
                silent_group: 1, // confirm.delivered
                weight: 2.0,
                amount_median: 5_000.0,
                amount_sigma: 1.2,
                ..generic
            },
            "account_opening" => Scenario {
                silent_rate: 0.025,
                silent_group: 4, // welcome.sent
                weight: 1.0,
                ..generic
            },
            _ => generic,
        }
    }
}

/// The service that emits `event` (realistic names for the default config).
pub fn service_for(event: &str, channel: &str) -> String {
    let known = match event {
        "transfer.requested" | "billpay.submitted" | "account.applied" => {
            return format!("{channel}-bff");
        }
        "transfer.accepted" | "transfer.rejected" => "payments-api",
        "ledger.posted" => "core-ledger",
        "notify.sms" => "notify-sms",
        "notify.push" => "notify-push",
        "billpay.confirmed" | "billpay.declined" => "billpay-api",
        "biller.remitted" => "biller-gateway",
        "deposit.captured" => "mobile-app",
        "deposit.received" | "deposit.rejected" => "deposits-api",
        "image.validated" => "image-validation",
        "deposit.credited" => "core-ledger",
        "wire.initiated" => "wires-portal",
        "wire.submitted" | "wire.refused" => "wires-api",
        "sanctions.screened" => "sanctions-screening",
        "swift.sent" | "swift.acked" => "swift-gateway",
        "order.placed" => "trading-app",
        "order.filled" | "order.rejected" => "order-router",
        "trade.booked" => "trade-booking",
        "confirm.delivered" => "confirmations",
        "account.approved" | "account.declined" => "onboarding-api",
        "kyc.verified" => "kyc-service",
        "account.created" => "core-accounts",
        "card.ordered" => "card-issuing",
        "online_banking.enabled" => "digital-identity",
        "welcome.sent" => "crm-mailer",
        other => return format!("{}-svc", other.split('.').next().unwrap_or("app")),
    };
    known.to_owned()
}
