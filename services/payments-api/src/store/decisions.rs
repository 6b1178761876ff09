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

/// The statement of [`apply_many`]: `$1` payment ids, `$2` new statuses, `$3` decisions (JSON),
/// `$4` the pending status. Public for the test of its plan.
pub const APPLY: &str = "WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[])
            WITH ORDINALITY AS t(id, status, decision, ord)
    ), current AS MATERIALIZED (
        -- One probe by key per decision, locked in payment id order, carrying its input
        -- along: the steps below read this alone, never joining two of these lists.
        SELECT i.ord, i.id, i.status AS new_status, i.decision AS new_decision,
               p.status, p.decision
        FROM (SELECT * FROM input ORDER BY id) AS i
        LEFT JOIN LATERAL (
            SELECT status, decision FROM payments p WHERE p.id = i.id
            OFFSET 0 FOR UPDATE
        ) AS p ON true
    ), changed AS (
        UPDATE payments p SET status = c.new_status, decision = c.new_decision,
                              updated_at = now()
        FROM current c
        WHERE p.id = c.id AND c.status = $4
        RETURNING p.id
    ), event AS (
        INSERT INTO payment_events (payment_id, from_status, to_status, cause, detail)
        SELECT c.id, c.status,
               CASE WHEN c.status = $4 THEN c.new_status ELSE c.status END,
               CASE WHEN c.status = $4 THEN 'risk_decision' ELSE 'risk_decision_ignored' END,
               c.new_decision
        FROM current c
        WHERE c.status IS NOT NULL
          AND (c.status = $4 OR c.decision IS DISTINCT FROM c.new_decision)
        ORDER BY c.ord
    )
    -- Every payment `current` found pending is changed (its row is locked since), so
    -- `status = $4` says which were; `changed` runs whether read or not.
    SELECT c.status, coalesce(c.decision = c.new_decision, false),
           coalesce(c.status = $4, false)
    FROM current c
    ORDER BY c.ord";

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
/// and one made while the table was small would scan it whole for every batch. Likewise no
/// step joins two of the statement's own lists: a reused plan guesses they hold a row or
/// ten and joins them by a nested loop, which made a batch of 128 cost as much as 1,600
/// (every decision compared with every other) just when a backlog makes batches large.
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
    let rows: Vec<(Option<PaymentStatus>, bool, bool)> = sqlx::query_as(APPLY)
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
