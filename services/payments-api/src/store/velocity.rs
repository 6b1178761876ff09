//! The payer's recent activity (velocity), kept as running totals so that accepting a payment
//! costs the same whatever the payer's history.
//!
//! Each payer has a row in `velocity_payers` (payments counted since `since`) and one per
//! currency in `velocity_totals`; each payment stores the running count and currency total
//! just before it (`velocity_seq`, `velocity_running_total`). Velocity over a window is the
//! running total before the new payment minus the running total before the payer's first
//! payment inside the window: one index probe per currency of the payer, exact.
//!
//! Exact under concurrency because writers of the same payer are serialized by the payer's
//! row lock, taken in its own statement before the insert (SQL function
//! `paysys_insert_payments`, migrations 0004 and 0005, called by `payments::insert_many`):
//! under READ COMMITTED the insert's snapshot starts after the lock was granted, so it sees
//! every earlier payment of the payer (from any group, any API replica), and no later one can
//! commit before it. Creation times are taken after the lock and never go below the payer's
//! last one, so they are monotone per payer and "inside the window" is a suffix of the
//! payer's payments.

use std::time::Duration;

use sqlx::PgConnection;

/// Idle payers removed per statement by [`forget_idle`] (bounded transactions).
const FORGET_BATCH: i64 = 10_000;

/// Removes payers without a payment for longer than `window` (nothing of theirs is inside
/// anyone's window any more), by range on `last_at`: no scan of the whole table. Rows locked
/// by a writer are skipped; that writer is about to make them recent anyway. Returns how
/// many payers went.
pub async fn forget_idle(conn: &mut PgConnection, window: Duration) -> Result<u64, sqlx::Error> {
    let mut forgotten = 0;
    loop {
        let deleted = sqlx::query!(
            "WITH idle AS (
                SELECT user_id FROM velocity_payers
                WHERE last_at < clock_timestamp() - make_interval(secs => $1)
                ORDER BY last_at
                LIMIT $2
                FOR UPDATE SKIP LOCKED
            )
            DELETE FROM velocity_payers v USING idle WHERE v.user_id = idle.user_id",
            window.as_secs_f64(),
            FORGET_BATCH
        )
        .execute(&mut *conn)
        .await?
        .rows_affected();
        forgotten += deleted;
        if deleted < FORGET_BATCH as u64 {
            return Ok(forgotten);
        }
    }
}
