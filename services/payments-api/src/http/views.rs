//! Response bodies.

use chrono::{DateTime, Utc};
use paysys_core::{Currency, ModelScore, Money, Outcome, PaymentStatus, Reason};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::store::disputes::{Dispute, DisputeReason};
use crate::store::payments::{PaymentEvent, PaymentRecord};
use crate::store::refunds::Refund;

/// The answer of the unversioned routes to a request that changed a payment: `201` for a new
/// one (the original demo's body, plus the payment's status), `200` for a capture or cancel.
/// `/v1` answers with [`PaymentSummary`].
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentChanged {
    #[serde(rename = "StatusCode")]
    #[schema(example = 201)]
    pub status_code: u16,
    #[serde(rename = "Status")]
    #[schema(example = "Success")]
    pub status: String,
    #[serde(rename = "PaymentId")]
    pub payment_id: Uuid,
    #[serde(rename = "PaymentStatus")]
    pub payment_status: PaymentStatus,
}

impl PaymentChanged {
    pub fn new(
        code: axum::http::StatusCode,
        payment_id: Uuid,
        payment_status: PaymentStatus,
    ) -> Self {
        Self {
            status_code: code.as_u16(),
            status: "Success".into(),
            payment_id,
            payment_status,
        }
    }
}

/// The answer to a `/v1` request that created or changed a payment: its id and status now
/// (`GET /v1/payments/{id}`, the `links`, has the rest).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentSummary {
    pub id: Uuid,
    pub status: PaymentStatus,
}

/// A payment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentView {
    pub id: Uuid,
    pub status: PaymentStatus,
    /// Major units, an exact decimal JSON number (`70.5`).
    #[serde(with = "paysys_core::money::json_number")]
    #[schema(value_type = f64, example = 70.5)]
    pub amount: Decimal,
    /// Integer minor units of the currency (`7050` cents).
    #[schema(example = 7050)]
    pub amount_minor: i64,
    #[schema(example = "USD")]
    pub currency: String,
    pub user_id: Uuid,
    pub payee_id: Uuid,
    pub payment_method_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The risk decision, once made.
    pub decision: Option<DecisionView>,
    /// The dispute, if the payment was disputed (it does not change `status`).
    pub dispute: Option<DisputeView>,
    /// The sum of its refunds in major units, an exact decimal JSON number (`0` until one).
    #[serde(with = "paysys_core::money::json_number")]
    #[schema(value_type = f64, example = 20.5)]
    pub refunded_amount: Decimal,
    /// The same in integer minor units.
    #[schema(example = 2050)]
    pub refunded_amount_minor: i64,
    /// Every refund, oldest first (only on `GET /payments/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunds: Option<Vec<RefundView>>,
    /// Every status change, oldest first (only on `GET /payments/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub history: Option<Vec<EventView>>,
}

/// The risk engine's decision.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionView {
    pub outcome: Outcome,
    pub score: u32,
    pub reasons: Vec<Reason>,
    pub rules_version: String,
    pub decided_at: DateTime<Utc>,
    /// What the rules alone decided (rules and model modes), to compare with `outcome`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rules_outcome: Option<Outcome>,
    /// The model that decided (model mode): its version, calibrated score and threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelScore>,
    /// A challenger model's score in shadow (it did not decide).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ModelScore>,
    /// The version of the feature vector the decision was made on. The values themselves
    /// are training data, exported by the data feed, not shown here: the model's score and
    /// the reasons are what explain a decision to a reader.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub features_version: Option<String>,
}

/// A dispute of the payment (a chargeback or fraud report): an outcome, not a status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeView {
    pub reason: DisputeReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub disputed_at: DateTime<Utc>,
}

impl From<Dispute> for DisputeView {
    fn from(dispute: Dispute) -> Self {
        Self {
            reason: dispute.reason,
            note: dispute.note,
            disputed_at: dispute.disputed_at,
        }
    }
}

/// A refund of (part of) a captured payment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    pub id: Uuid,
    pub payment_id: Uuid,
    /// Major units, an exact decimal JSON number.
    #[serde(with = "paysys_core::money::json_number")]
    #[schema(value_type = f64, example = 20.5)]
    pub amount: Decimal,
    #[schema(example = 2050)]
    pub amount_minor: i64,
    #[schema(example = "USD")]
    pub currency: String,
    pub created_at: DateTime<Utc>,
}

impl RefundView {
    pub fn new(refund: Refund, currency: Currency) -> Self {
        let money = Money {
            minor: refund.amount_minor,
            currency,
        };
        Self {
            id: refund.id,
            payment_id: refund.payment_id,
            amount: money.to_decimal(),
            amount_minor: money.minor,
            currency: currency.code().to_owned(),
            created_at: refund.created_at,
        }
    }
}

/// The answer to a refund: the refund, and what became of the payment.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefundCreated {
    #[serde(flatten)]
    pub refund: RefundView,
    /// `partially_refunded`, or `refunded` once nothing is left.
    pub payment_status: PaymentStatus,
    /// The payment's refunds so far, this one included, in minor units.
    pub payment_refunded_amount_minor: i64,
}

/// One entry of a payment's audit trail.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// Status before (absent for creation).
    pub from: Option<PaymentStatus>,
    pub to: PaymentStatus,
    /// `created`, `risk_decision`, `risk_decision_ignored`, `captured`, `canceled`,
    /// `refunded` (`detail` has the refund's id and amount), `disputed` (its `from` and `to`
    /// are the unchanged status; `detail` has the reason).
    pub cause: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// A page of payments, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPage {
    pub data: Vec<PaymentView>,
    pub has_more: bool,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

impl PaymentView {
    /// The payment; `history` and `refunds` are shown when given (`GET /payments/{id}`).
    pub fn from_record(
        record: PaymentRecord,
        history: Option<Vec<PaymentEvent>>,
        refunds: Option<Vec<Refund>>,
    ) -> Self {
        let money = record.money();
        let refunded = Money {
            minor: record.refunded_minor,
            currency: money.currency,
        };
        let dispute = record.dispute().map(DisputeView::from);
        let features_version = record.decision_features_version;
        Self {
            id: record.id,
            status: record.status,
            amount: money.to_decimal(),
            amount_minor: money.minor,
            currency: money.currency.code().to_owned(),
            user_id: record.user_id,
            payee_id: record.payee_id,
            payment_method_id: record.payment_method_id,
            created_at: record.created_at,
            updated_at: record.updated_at,
            decision: record.decision.map(|json| {
                let d = json.0;
                DecisionView {
                    outcome: d.outcome,
                    score: d.score,
                    reasons: d.reasons,
                    rules_version: d.rules_version,
                    decided_at: d.decided_at,
                    rules_outcome: d.rules_outcome,
                    model: d.model,
                    shadow: d.shadow,
                    features_version,
                }
            }),
            dispute,
            refunded_amount: refunded.to_decimal(),
            refunded_amount_minor: refunded.minor,
            refunds: refunds.map(|refunds| {
                refunds
                    .into_iter()
                    .map(|refund| RefundView::new(refund, money.currency))
                    .collect()
            }),
            history: history.map(|events| {
                events
                    .into_iter()
                    .map(|e| EventView {
                        from: e.from_status,
                        to: e.to_status,
                        cause: e.cause,
                        detail: e.detail,
                        at: e.at,
                    })
                    .collect()
            }),
        }
    }
}
