//! Disputes: a payer's bank telling that an approved payment was contested (a chargeback, a
//! fraud report). A dispute is an outcome of the payment, the label the risk model learns
//! from, not a state of it: recording one leaves the payment's status as it is.

use chrono::{DateTime, Utc};
use paysys_core::PaymentStatus;
use sqlx::PgConnection;
use uuid::Uuid;

pub use paysys_core::DisputeReason;

/// A recorded dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispute {
    pub reason: DisputeReason,
    pub note: Option<String>,
    pub disputed_at: DateTime<Utc>,
}

impl Dispute {
    /// The dispute stored in a payment row's columns, if any.
    pub fn from_columns(
        reason: Option<&str>,
        note: Option<&str>,
        at: Option<DateTime<Utc>>,
    ) -> Option<Self> {
        Some(Self {
            // The column's CHECK admits exactly these values.
            reason: reason?.parse().ok()?,
            note: note.map(str::to_owned),
            disputed_at: at?,
        })
    }
}

/// What a dispute request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disputed {
    Recorded(Dispute),
    /// The payment was disputed before: the first dispute stands.
    AlreadyDisputed(Dispute),
    /// The payment was never approved (pending, declined, or canceled before a decision): it
    /// never executed, so there is nothing to contest.
    NeverApproved {
        current: PaymentStatus,
    },
    NotFound,
}

/// Records a dispute of the principal's payment if it was ever approved and is not disputed
/// yet, with its audit event, in one statement. "Ever approved" is the stored decision's
/// outcome: a decision is stored only when it moves a pending payment, so an approved,
/// captured, or approved-then-canceled payment has `approved` there, and nothing else has.
/// The row lock serializes concurrent disputes of the same payment.
pub async fn record(
    conn: &mut PgConnection,
    principal: &str,
    id: Uuid,
    reason: DisputeReason,
    note: Option<&str>,
) -> Result<Disputed, sqlx::Error> {
    let row = sqlx::query!(
        r#"WITH current AS (
            SELECT id, status, coalesce(decision->>'outcome' = 'approved', false) AS approved,
                   dispute_reason, dispute_note, disputed_at
            FROM payments WHERE id = $1 AND principal = $2 FOR UPDATE
        ), recorded AS (
            UPDATE payments p
            SET dispute_reason = $3, dispute_note = $4, disputed_at = now(), updated_at = now()
            FROM current c
            WHERE p.id = c.id AND c.approved AND c.dispute_reason IS NULL
            RETURNING p.dispute_reason, p.dispute_note, p.disputed_at
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
            SELECT c.id, c.status, c.status, 'disputed',
                   jsonb_build_object('reason', $3::text, 'note', $4::text)
            FROM current c CROSS JOIN recorded
        )
        SELECT c.status AS "status!: PaymentStatus", c.approved AS "approved!",
               coalesce(r.dispute_reason, c.dispute_reason) AS reason,
               CASE WHEN r.dispute_reason IS NULL THEN c.dispute_note ELSE r.dispute_note END
                   AS note,
               coalesce(r.disputed_at, c.disputed_at) AS disputed_at,
               r.dispute_reason IS NOT NULL AS "recorded!"
        FROM current c LEFT JOIN recorded r ON true"#,
        id,
        principal,
        reason.as_str(),
        note
    )
    .fetch_optional(conn)
    .await?;
    let Some(row) = row else {
        return Ok(Disputed::NotFound);
    };
    let (current, approved) = (row.status, row.approved);
    let dispute =
        Dispute::from_columns(row.reason.as_deref(), row.note.as_deref(), row.disputed_at);
    Ok(match (dispute, row.recorded) {
        (Some(dispute), true) => Disputed::Recorded(dispute),
        (Some(dispute), false) => Disputed::AlreadyDisputed(dispute),
        (None, _) => {
            debug_assert!(!approved, "an approved payment without a dispute gets one");
            Disputed::NeverApproved { current }
        }
    })
}
