//! Group commit for new payments.
//!
//! Each accepted payment needs its own durable commit before the `201`, and a commit costs a
//! WAL flush. Under load, the requests waiting at the same moment are written together: a few
//! writer tasks each take whatever has queued up (at least one payment, at most
//! `MAX_GROUP`), insert the group in one statement and commit once, then answer every
//! request of the group. An idle system writes groups of one, so nothing waits for company.
//!
//! Each payer's payments always go to the same writer (by `userId`), so a payer who pays very
//! often fills one writer's groups instead of making several writers queue on the payer's
//! row lock (`store::velocity`): its payments wait in the queue and are written together.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::store::payments::{self, Insert};

/// Writer tasks, each with its own queue: enough to overlap one group's commit with the next
/// group's insert. More make smaller groups, and a call costs the database about as much to
/// start as to insert a few payments: with 4, 64 clients got about 20 % fewer payments
/// created per second than with 2 (interleaved runs of `create_payments`), with 1 fewer again.
const WRITERS: usize = 2;
/// Largest group written in one statement.
const MAX_GROUP: usize = 256;
/// Payments waiting for each writer; a full queue makes requests wait (bounded memory).
const QUEUE: usize = 1024;

struct Job {
    insert: Insert,
    /// The commit time, or why the group failed: each request turns the error into its answer
    /// (and logs it) itself, inside its own span, so that the log line has its request id (a
    /// group's requests have no one id).
    done: oneshot::Sender<Result<DateTime<Utc>, Arc<sqlx::Error>>>,
}

/// Hands payments to the writer tasks. Cloning shares the same writers.
#[derive(Clone)]
pub struct PaymentWriter {
    queues: Arc<[mpsc::Sender<Job>]>,
}

impl PaymentWriter {
    /// Starts the writers; they stop when the last `PaymentWriter` is dropped.
    pub fn start(pool: PgPool, velocity_window: Duration) -> Self {
        let queues = (0..WRITERS)
            .map(|_| {
                let (queue, jobs) = mpsc::channel(QUEUE);
                tokio::spawn(write_groups(pool.clone(), velocity_window, jobs));
                queue
            })
            .collect();
        Self { queues }
    }

    /// Inserts one payment; returns once it is committed.
    pub async fn insert(&self, insert: Insert) -> Result<DateTime<Utc>, ApiError> {
        let (done, committed) = oneshot::channel();
        let writer = insert.payment.user_id.as_u128() as usize % self.queues.len();
        self.queues[writer]
            .send(Job { insert, done })
            .await
            .map_err(|_| ApiError::Internal)?;
        committed
            .await
            .map_err(|_| ApiError::Internal)?
            .map_err(|error| ApiError::from_database(&error))
    }
}

async fn write_groups(pool: PgPool, window: Duration, mut jobs: mpsc::Receiver<Job>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    loop {
        if jobs.recv_many(&mut group, MAX_GROUP).await == 0 {
            return;
        }
        let (inserts, replies): (Vec<Insert>, Vec<_>) =
            group.drain(..).map(|job| (job.insert, job.done)).unzip();
        let written = match pool.acquire().await {
            Ok(mut conn) => payments::insert_many(&mut conn, &inserts, window).await,
            Err(error) => Err(error),
        };
        match written {
            Ok(created) => {
                for (reply, at) in replies.into_iter().zip(created) {
                    let _ = reply.send(Ok(at));
                }
            }
            Err(error) => {
                let error = Arc::new(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
