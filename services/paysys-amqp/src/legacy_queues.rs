//! Retiring the version-1 (classic) queues once the version-2 (quorum) topology is declared.
//!
//! A queue's type cannot change after it is declared, so the quorum queues took new names
//! (see `paysys_core::topology`). What an older release left behind is moved, not dropped:
//! for each legacy queue that still exists,
//! 1. unbind it, so nothing new is routed to it (a payment published during the handover
//!    may reach both queues for an instant; every consumer is idempotent);
//! 2. move every message it holds to the exchange and routing key that fed it, which now
//!    reach its version-2 successor: publish under confirms, and ack the legacy copy only
//!    after the confirm, so a crash in between duplicates a message but never loses one;
//! 3. delete it, only if it is empty and no consumer (an old replica mid-rollout) is still
//!    attached; otherwise it is left for the next attempt.
//!
//! The move consumes the legacy queue exclusively, so it never runs beside an old replica
//! or another process moving the same queue, and nobody deletes the queue under it.
//!
//! Both services call [`retire`] each time they connect, so the migration needs no step of
//! its own and finishes with the last old replica.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Connection, Consumer};

use paysys_core::topology::{QueueBinding, Topology};

use crate as amqp;
use crate::PublishError;

/// Messages moved per round of gets, publishes and confirms.
const BATCH: usize = 64;

/// What one call of [`retire`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Retirement {
    /// Messages moved from legacy queues to their successors.
    pub moved: u64,
    /// Legacy queues deleted by this call.
    pub deleted: Vec<String>,
    /// Legacy queues that still exist: an old replica still consumes them, or messages
    /// arrived while moving. A later call finishes them.
    pub remaining: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RetireError {
    #[error("broker error while retiring legacy queue {queue}: {source}")]
    Broker {
        queue: String,
        #[source]
        source: lapin::Error,
    },
    #[error("moving a message out of legacy queue {queue} failed: {source}")]
    Move {
        queue: String,
        #[source]
        source: PublishError,
    },
}

/// [`retire`], as the services call it on each connection: a failure is logged and left to
/// the next connection, since the version-2 topology works without it.
pub async fn retire_or_log(connection: &Connection, topology: &Topology) {
    match retire(connection, topology).await {
        Ok(retirement) if retirement == Retirement::default() => {}
        Ok(retirement) => tracing::info!(
            moved = retirement.moved,
            deleted = ?retirement.deleted,
            remaining = ?retirement.remaining,
            "retiring the version-1 classic queues"
        ),
        Err(error) => {
            tracing::warn!(%error, "cannot retire the version-1 classic queues yet; retrying on the next connection")
        }
    }
}

/// Retires every legacy queue of `topology` (see the module comment). The version-2
/// topology must be declared first, or moved messages are unroutable (and stay put).
pub async fn retire(
    connection: &Connection,
    topology: &Topology,
) -> Result<Retirement, RetireError> {
    let mut retirement = Retirement::default();
    for legacy in topology.legacy_queues() {
        match retire_one(connection, &legacy).await {
            Ok(Outcome::Absent) => {}
            Ok(Outcome::Deleted(moved)) => {
                tracing::info!(queue = %legacy.queue, moved, "retired legacy classic queue");
                retirement.moved += moved;
                retirement.deleted.push(legacy.queue.clone());
            }
            Ok(Outcome::InUse(moved)) => {
                tracing::info!(queue = %legacy.queue, moved, "legacy queue still in use; retiring it later");
                retirement.moved += moved;
                retirement.remaining.push(legacy.queue.clone());
            }
            // Another process retired it between our steps.
            Err(RetireError::Broker { source, .. }) if is_not_found(&source) => {}
            Err(error) => return Err(error),
        }
    }
    Ok(retirement)
}

enum Outcome {
    /// Absent, or empty with no consumer and deleted on sight: nothing to move or report.
    Absent,
    /// Deleted after moving this many messages.
    Deleted(u64),
    /// Another consumer (an old replica, or another process retiring it) holds it.
    InUse(u64),
}

async fn retire_one(
    connection: &Connection,
    legacy: &QueueBinding,
) -> Result<Outcome, RetireError> {
    let broker = |source| RetireError::Broker {
        queue: legacy.queue.clone(),
        source,
    };
    // The common case, on every start of a system that never ran a version-1 release, is
    // that the queue is absent, and that must cost no error line: a passive declare of an
    // absent queue makes the broker close the channel, which lapin logs as an ERROR. A
    // conditional delete does not: RabbitMQ answers delete-ok for an absent queue, deletes
    // an empty unused one (nothing left to move, and nothing routed to it after the delete),
    // and refuses (closing this channel) only when messages or a consumer remain, which is
    // the migration proper below.
    let probe = connection.create_channel().await.map_err(broker)?;
    let gone = probe
        .queue_delete(
            legacy.queue.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    match gone {
        Ok(_) => {
            let _ = probe.close(200, "legacy queue checked".into()).await;
            return Ok(Outcome::Absent);
        }
        Err(error) if is_precondition_failed(&error) => {}
        Err(error) => return Err(broker(error)),
    }
    let channel = connection.create_channel().await.map_err(broker)?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(broker)?;
    channel
        .basic_qos(BATCH as u16, BasicQosOptions::default())
        .await
        .map_err(broker)?;
    channel
        .queue_unbind(
            legacy.queue.as_str().into(),
            legacy.exchange.as_str().into(),
            legacy.routing_key.into(),
            FieldTable::default(),
        )
        .await
        .map_err(broker)?;
    // The exclusive consumer is the lock: the broker refuses it while anyone else consumes
    // (an old replica, or another process moving the same queue), and while it is held no
    // one else can delete the queue under the messages being moved.
    let consumer = channel
        .basic_consume(
            legacy.queue.as_str().into(),
            "paysys-legacy-retirement".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await;
    let mut consumer = match consumer {
        Ok(consumer) => consumer,
        Err(error) if is_not_found(&error) => return Ok(Outcome::Absent),
        Err(_) => return Ok(Outcome::InUse(0)),
    };
    let moved = move_all(&channel, &mut consumer, legacy).await?;
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .map_err(broker)?;
    let deleted = channel
        .queue_delete(
            legacy.queue.as_str().into(),
            QueueDeleteOptions {
                if_unused: true,
                if_empty: true,
                ..Default::default()
            },
        )
        .await;
    match deleted {
        Ok(_) => Ok(Outcome::Deleted(moved)),
        Err(error) if is_not_found(&error) => Ok(Outcome::Deleted(moved)),
        // PRECONDITION_FAILED: a consumer attached or a message arrived since; nothing lost.
        Err(_) => Ok(Outcome::InUse(moved)),
    }
}

fn is_not_found(error: &lapin::Error) -> bool {
    error.to_string().contains("NOT_FOUND")
}

/// A conditional delete refused: the queue still holds messages or has a consumer.
fn is_precondition_failed(error: &lapin::Error) -> bool {
    error.to_string().contains("PRECONDITION_FAILED")
}

/// How long the queue must stay silent before its depth is checked for the end.
const QUIET: Duration = Duration::from_millis(200);

/// Moves messages, a batch at a time, until the queue is empty; returns how many moved.
async fn move_all(
    channel: &Channel,
    consumer: &mut Consumer,
    legacy: &QueueBinding,
) -> Result<u64, RetireError> {
    let broker = |source| RetireError::Broker {
        queue: legacy.queue.clone(),
        source,
    };
    let mut moved = 0;
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            match tokio::time::timeout(QUIET, consumer.next()).await {
                Ok(Some(delivery)) => batch.push(delivery.map_err(broker)?),
                Ok(None) => break,
                Err(_quiet) => break,
            }
        }
        if batch.is_empty() {
            if depth(channel, &legacy.queue).await.map_err(broker)? == 0 {
                return Ok(moved);
            }
            continue;
        }
        moved += move_batch(channel, &batch, legacy).await?;
    }
}

/// Publishes a batch under confirms, then acks each legacy copy whose publish was confirmed.
async fn move_batch(
    channel: &Channel,
    batch: &[Delivery],
    legacy: &QueueBinding,
) -> Result<u64, RetireError> {
    let mut confirms = Vec::with_capacity(batch.len());
    for delivery in batch {
        let confirm = amqp::publish(
            channel,
            &legacy.exchange,
            legacy.routing_key,
            &delivery.data,
            delivery.properties.clone(),
        )
        .await;
        confirms.push(confirm);
    }
    let mut moved = 0;
    for (delivery, confirm) in batch.iter().zip(confirms) {
        let outcome = match confirm {
            Ok(confirm) => confirm
                .await
                .map_err(PublishError::from)
                .and_then(amqp::check_confirmation),
            Err(error) => Err(error),
        };
        if let Err(source) = outcome {
            // Unacked, this one and the rest of the batch return to the legacy queue when
            // the channel closes; the next attempt moves them.
            let _ = delivery
                .acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
            return Err(RetireError::Move {
                queue: legacy.queue.clone(),
                source,
            });
        }
        delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|source| RetireError::Broker {
                queue: legacy.queue.clone(),
                source,
            })?;
        moved += 1;
    }
    Ok(moved)
}

async fn depth(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}
