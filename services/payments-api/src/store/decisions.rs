//! Applying the risk engine's decisions to payments.

use paysys_core::{DecisionMessage, Outcome, PaymentStatus};
use sqlx::PgConnection;
use sqlx::types::Json;

/// What a decision did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The payment moved from pending to approved or declined.
    Decided,
    /// The same decision was applied before (a redelivery): nothing changed.
    Duplicate,
    /// The payment is no longer pending (canceled, or decided differently): the decision was
    /// recorded in the audit trail and otherwise ignored.
    Ignored { current: PaymentStatus },
    /// No such payment: the caller dead-letters the message.
    UnknownPayment,
}

fn status_for(outcome: Outcome) -> PaymentStatus {
    match outcome {
        Outcome::Approved => PaymentStatus::Approved,
        Outcome::Declined => PaymentStatus::Declined,
    }
}

/// Applies `decision` in one statement: the status change, the stored decision and the audit
/// event commit together, and the row lock serializes concurrent deliveries of decisions for
/// the same payment.
pub async fn apply(
    conn: &mut PgConnection,
    decision: &DecisionMessage,
) -> Result<Applied, sqlx::Error> {
    let new_status = status_for(decision.outcome);
    let row: Option<(String, bool, i64)> = sqlx::query_as(
        "WITH current AS (
            SELECT id, status, decision FROM payments WHERE id = $1 FOR UPDATE
        ), changed AS (
            UPDATE payments p SET status = $2, decision = $3, updated_at = now()
            FROM current c WHERE p.id = c.id AND c.status = 'pending'
            RETURNING p.id
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
            SELECT c.id, c.status,
                   CASE WHEN changed.id IS NULL THEN c.status ELSE $2 END,
                   CASE WHEN changed.id IS NULL THEN 'risk_decision_ignored' ELSE 'risk_decision' END,
                   $3
            FROM current c LEFT JOIN changed ON changed.id = c.id
            WHERE changed.id IS NOT NULL OR c.decision IS DISTINCT FROM $3
        )
        SELECT c.status, coalesce(c.decision = $3, false), (SELECT count(*) FROM changed)
        FROM current c",
    )
    .bind(decision.payment_id)
    .bind(new_status.as_str())
    .bind(Json(decision))
    .fetch_optional(conn)
    .await?;
    Ok(match row {
        None => Applied::UnknownPayment,
        Some((_, _, 1)) => Applied::Decided,
        Some((_, true, _)) => Applied::Duplicate,
        Some((current, false, _)) => Applied::Ignored {
            current: current.parse().expect("constrained status"),
        },
    })
}
