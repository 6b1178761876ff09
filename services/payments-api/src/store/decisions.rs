//! Applying the risk engine's decisions to payments.

use paysys_core::{DecisionMessage, Outcome, PaymentStatus};
use sqlx::types::Json;
use sqlx::{PgConnection, query};
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

/// The statement of [`apply_many`], handed to `$then!` (`sqlx`'s macro there, `sql_text` for
/// [`APPLY`]) so that it is written once: `$1` payment ids, `$2` new statuses, `$3` decisions
/// (JSON, without their features), `$4` the pending status, `$5` the features' versions and
/// `$6` their values (float8[] literals; NULL for a decision without features).
macro_rules! apply_statement {
    ($then:ident ! ($($before:tt)*) $($after:tt)*) => {
        $then!($($before)* r#"WITH input AS (
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $5::text[], $6::text[])
            WITH ORDINALITY AS t(id, status, decision, features_version, features, ord)
    ), current AS MATERIALIZED (
        -- One probe by key per decision, locked in payment id order, carrying its input
        -- along: the steps below read this alone, never joining two of these lists.
        SELECT i.ord, i.id, i.status AS new_status, i.decision AS new_decision,
               i.features_version AS new_features_version,
               i.features::float8[] AS new_features,
               p.status, p.decision
        FROM (SELECT * FROM input ORDER BY id) AS i
        LEFT JOIN LATERAL (
            SELECT status, decision FROM payments p WHERE p.id = i.id
            OFFSET 0 FOR UPDATE
        ) AS p ON true
    ), changed AS (
        UPDATE payments p SET status = c.new_status, decision = c.new_decision,
                              decision_features_version = c.new_features_version,
                              decision_features = c.new_features,
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
    -- NULL for an unknown payment (nothing joined): "?" tells sqlx, which cannot see it.
    SELECT c.status AS "status?: PaymentStatus",
           coalesce(c.decision = c.new_decision, false) AS "same_decision!",
           coalesce(c.status = $4, false) AS "decided!"
    FROM current c
    ORDER BY c.ord"# $($after)*)
    };
}

/// The statement of [`apply_many`]; public for the test of its plan.
pub const APPLY: &str = apply_statement!(sql_text!());

/// Applies `decision` in one statement (see [`apply_many`]).
pub async fn apply(
    conn: &mut PgConnection,
    decision: &DecisionMessage,
) -> Result<Applied, sqlx::Error> {
    let mut applied = apply_many(conn, std::slice::from_ref(decision)).await?;
    Ok(applied.pop().expect("one result per decision"))
}

/// Applies decisions for distinct payments in one statement and one commit: each status
/// change, stored decision (everything the engine sent: outcome, reasons, rules outcome, model
/// and shadow scores in `decision`, the feature values in `decision_features`) and audit
/// event commit together, and the row locks (taken in
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
    let statuses: Vec<&str> = decisions
        .iter()
        .map(|d| status_for(d.outcome).as_str())
        .collect();
    // The features have a column of their own (exact float8s, exported by the data feed);
    // the rest of the decision is kept as received.
    let bodies: Vec<Json<DecisionMessage>> = decisions
        .iter()
        .map(|d| {
            Json(DecisionMessage {
                features: None,
                ..d.clone()
            })
        })
        .collect();
    let feature_versions: Vec<Option<&str>> = decisions
        .iter()
        .map(|d| d.features.as_ref().map(|f| f.version.as_str()))
        .collect();
    let feature_values: Vec<Option<String>> = decisions
        .iter()
        .map(|d| d.features.as_ref().map(|f| float8_array(&f.values)))
        .collect();
    let rows = apply_statement!(
        query!(),
        &ids,
        &statuses as &[&str],
        &bodies as &[Json<DecisionMessage>],
        PaymentStatus::Pending.as_str(),
        &feature_versions as &[Option<&str>],
        &feature_values as &[Option<String>]
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| match (row.status, row.same_decision, row.decided) {
            (None, _, _) => Applied::UnknownPayment,
            (Some(_), _, true) => Applied::Decided,
            (Some(_), true, _) => Applied::Duplicate,
            (Some(current), false, false) => Applied::Ignored { current },
        })
        .collect())
}

/// A float8[] literal holding exactly `values`: `{:?}` writes the shortest text that parses
/// back to the same f64 (PostgreSQL's float8 input rounds correctly), and names the
/// non-finite values as PostgreSQL reads them (`NaN`, `inf`, `-inf`).
fn float8_array(values: &[f64]) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!("{{{}}}", items.join(","))
}

#[cfg(test)]
mod tests {
    use super::float8_array;

    #[test]
    fn float8_literals_name_every_value() {
        assert_eq!(
            float8_array(&[0.1 + 0.2, 1e300, -0.0, 7050.0, f64::NAN, f64::NEG_INFINITY]),
            "{0.30000000000000004,1e300,-0.0,7050.0,NaN,-inf}"
        );
        assert_eq!(float8_array(&[]), "{}");
    }
}
