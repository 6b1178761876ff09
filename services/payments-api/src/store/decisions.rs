//! Applying the risk engine's decisions to payments.

use paysys_core::{DecisionMessage, Outcome, PaymentStatus};
use sqlx::PgConnection;
use sqlx::types::Json;
use uuid::Uuid;

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

/// Applies `decision` in one statement (see [`apply_many`]).
pub async fn apply(
    conn: &mut PgConnection,
    decision: &DecisionMessage,
) -> Result<Applied, sqlx::Error> {
    let mut applied = apply_many(conn, std::slice::from_ref(decision)).await?;
    Ok(applied.pop().expect("one result per decision"))
}

/// Applies decisions for distinct payments in one statement and one commit: each status
/// change, stored decision and audit event commit together, and the row locks (taken in
/// payment id order, so concurrent batches never deadlock) serialize concurrent deliveries
/// of decisions for the same payment. Returns what each decision did, in order.
///
/// Payments are reached by key only (lateral probes; `OFFSET 0` keeps them from being turned
/// into a join), whatever the planner believes about the table: a connection reuses its plans,
/// and one made while the table was small would scan it whole for every batch.
///
/// # Panics
/// If two decisions are for the same payment (the caller splits such batches).
pub async fn apply_many(
    conn: &mut PgConnection,
    decisions: &[DecisionMessage],
) -> Result<Vec<Applied>, sqlx::Error> {
    let ids: Vec<Uuid> = decisions.iter().map(|d| d.payment_id).collect();
    assert!(
        ids.iter().collect::<std::collections::HashSet<_>>().len() == ids.len(),
        "one decision per payment in a batch"
    );
    let statuses: Vec<PaymentStatus> = decisions.iter().map(|d| status_for(d.outcome)).collect();
    let bodies: Vec<Json<&DecisionMessage>> = decisions.iter().map(Json).collect();
    let rows: Vec<(Option<PaymentStatus>, bool, bool)> = sqlx::query_as(
        "WITH input AS (
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])
                WITH ORDINALITY AS t(id, status, decision, ord)
        ), current AS (
            -- One probe by key per decision, locked in payment id order.
            SELECT p.id, p.status, p.decision
            FROM (SELECT id FROM input ORDER BY id) AS i
            CROSS JOIN LATERAL (
                SELECT id, status, decision FROM payments p WHERE p.id = i.id
                OFFSET 0 FOR UPDATE
            ) AS p
        ), changed AS (
            UPDATE payments p SET status = i.status, decision = i.decision, updated_at = now()
            FROM current c JOIN input i USING (id)
            WHERE p.id = c.id AND c.status = $4
            RETURNING p.id
        ), event AS (
            INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
            SELECT c.id, c.status,
                   CASE WHEN changed.id IS NULL THEN c.status ELSE i.status END,
                   CASE WHEN changed.id IS NULL THEN 'risk_decision_ignored' ELSE 'risk_decision' END,
                   i.decision
            FROM current c JOIN input i USING (id) LEFT JOIN changed ON changed.id = c.id
            WHERE changed.id IS NOT NULL OR c.decision IS DISTINCT FROM i.decision
            ORDER BY i.ord
        )
        SELECT c.status, coalesce(c.decision = i.decision, false), changed.id IS NOT NULL
        FROM input i LEFT JOIN current c USING (id) LEFT JOIN changed ON changed.id = i.id
        ORDER BY i.ord",
    )
    .bind(&ids)
    .bind(&statuses)
    .bind(&bodies)
    .bind(PaymentStatus::Pending)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| match row {
            (None, _, _) => Applied::UnknownPayment,
            (Some(_), _, true) => Applied::Decided,
            (Some(_), true, _) => Applied::Duplicate,
            (Some(current), false, false) => Applied::Ignored { current },
        })
        .collect())
}
