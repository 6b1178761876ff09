//! Group commit for new payments.
//!
//! Each accepted payment needs its own durable commit before the `201`, and a commit costs a
//! WAL flush. Under load, the requests waiting at the same moment are written together: a few
//! writer tasks each take whatever has queued up (at least one payment, at most
//! `MAX_GROUP`), insert the group in one statement and commit once, then answer every
//! request of the group. An idle system writes groups of one, so nothing waits for company.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Mutex, mpsc, oneshot};

use crate::error::ApiError;
use crate::store::payments::{self, Insert};

/// Writer tasks: enough to overlap one group's commit with the next group's insert.
const WRITERS: usize = 4;
/// Largest group written in one statement.
const MAX_GROUP: usize = 256;
/// Payments waiting for a writer; a full queue makes requests wait (bounded memory).
const QUEUE: usize = 4096;

struct Job {
    insert: Insert,
    done: oneshot::Sender<Result<DateTime<Utc>, ApiError>>,
}

/// Hands payments to the writer tasks. Cloning shares the same writers.
#[derive(Clone)]
pub struct PaymentWriter {
    queue: mpsc::Sender<Job>,
}

impl PaymentWriter {
    /// Starts the writers; they stop when the last `PaymentWriter` is dropped.
    pub fn start(pool: PgPool, velocity_window: Duration) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        let jobs = Arc::new(Mutex::new(jobs));
        for _ in 0..WRITERS {
            tokio::spawn(write_groups(pool.clone(), velocity_window, jobs.clone()));
        }
        Self { queue }
    }

    /// Inserts one payment; returns once it is committed.
    pub async fn insert(&self, insert: Insert) -> Result<DateTime<Utc>, ApiError> {
        let (done, committed) = oneshot::channel();
        self.queue
            .send(Job { insert, done })
            .await
            .map_err(|_| ApiError::Internal)?;
        committed.await.map_err(|_| ApiError::Internal)?
    }
}

async fn write_groups(pool: PgPool, window: Duration, jobs: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let group = {
            let mut jobs = jobs.lock().await;
            let Some(first) = jobs.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match jobs.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        let (inserts, replies): (Vec<Insert>, Vec<_>) =
            group.into_iter().map(|job| (job.insert, job.done)).unzip();
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
                let error = ApiError::from(error);
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
        }
    }
}
