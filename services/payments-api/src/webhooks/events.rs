//! What an event is to a merchant: its type, and the body delivered and listed.

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::http::views::PaymentView;
use crate::store::payments::PaymentRecord;

/// The kinds of event, as named in `event_types` and in each event's `type`. The triggers of
/// migration 0007 write exactly these names.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    ToSchema,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum EventType {
    /// A payment was accepted (pending).
    #[serde(rename = "payment.created")]
    #[strum(serialize = "payment.created")]
    Created,
    #[serde(rename = "payment.approved")]
    #[strum(serialize = "payment.approved")]
    Approved,
    #[serde(rename = "payment.declined")]
    #[strum(serialize = "payment.declined")]
    Declined,
    #[serde(rename = "payment.captured")]
    #[strum(serialize = "payment.captured")]
    Captured,
    #[serde(rename = "payment.canceled")]
    #[strum(serialize = "payment.canceled")]
    Canceled,
    /// Part or all of a captured payment was refunded.
    #[serde(rename = "payment.refunded")]
    #[strum(serialize = "payment.refunded")]
    Refunded,
    /// The payer's bank contested the payment (its status is unchanged).
    #[serde(rename = "payment.disputed")]
    #[strum(serialize = "payment.disputed")]
    Disputed,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The accepted names, for error messages.
    pub fn expected() -> String {
        use strum::VariantArray;
        Self::VARIANTS
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An event: what a webhook delivers (the request body) and `GET /v1/events` lists.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    /// Unique and increasing in commit order: the receiver's deduplication key and the
    /// `after` cursor of `GET /v1/events`.
    #[schema(example = 42)]
    pub id: i64,
    #[serde(rename = "type")]
    #[schema(example = "payment.approved")]
    pub event_type: String,
    pub created_at: DateTime<Utc>,
    /// The payment as it was right after the change (the body of `GET /payments/{id}`
    /// without its audit trail).
    pub payment: PaymentView,
}

/// A page of events, oldest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventPage {
    pub data: Vec<WebhookEvent>,
    pub has_more: bool,
}

impl WebhookEvent {
    /// The event from its stored row: `payment` is the row's JSON as the trigger took it.
    pub fn render(
        id: i64,
        event_type: String,
        created_at: DateTime<Utc>,
        payment: &str,
    ) -> Result<Self, serde_json::Error> {
        let record: PaymentRecord = serde_json::from_str(payment)?;
        Ok(Self {
            id,
            event_type,
            created_at,
            payment: PaymentView::from_record(record, None, None),
        })
    }
}
