//! RabbitMQ plumbing shared by the services: connecting with backoff, declaring the topology
//! (its names are `paysys_core::topology`), publishing persistent messages under publisher
//! confirms, and dead-lettering with a reason.

use std::time::Duration;

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use paysys_core::topology::Topology;
use paysys_runtime::backoff::{self, Retryable};
use paysys_runtime::config::redact_url;

pub mod legacy_queues;

/// Header carrying why a message was dead-lettered.
pub const DEAD_LETTER_REASON_HEADER: &str = "x-paysys-reason";
/// Header naming the queue a dead-lettered message came from.
pub const DEAD_LETTER_SOURCE_HEADER: &str = "x-paysys-source-queue";

/// Why a publish did not count as sent.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("broker error: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker refused the message (nack)")]
    Nacked,
    #[error("message was unroutable and returned by the broker")]
    Unroutable,
    #[error("publisher confirms are not enabled on this channel")]
    ConfirmsNotEnabled,
}

/// Longest wait for the AMQP handshake: a broker that accepts the TCP connection but never
/// answers (booting, overloaded, a half-open proxy) is a failed attempt, not a hang.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Longest wait for the broker to acknowledge a close. A connection the broker has blocked
/// (a memory or disk alarm stops it reading from publishers) never answers one.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens one connection; `name` shows in the RabbitMQ management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(url, properties)).await {
        Ok(connected) => connected,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no AMQP handshake within {CONNECT_TIMEOUT:?}"),
        )
        .into()),
    }
}

/// Closes `connection`, waiting at most [`CLOSE_TIMEOUT`] for the broker. Dropping it
/// afterwards closes the socket either way.
pub async fn close(connection: &Connection) {
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, connection.close(200, "bye".into())).await;
}

/// Longest wait for the broker to confirm a channel's close on a connection it is not
/// blocking. The confirm means it has processed every ack sent before; a channel holding
/// many unacked deliveries of a quorum queue takes a while to close on a loaded node, and
/// dropping the socket earlier can lose those acks (the payments would be redelivered and
/// decided again).
pub const CHANNEL_CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// Closes `channel` of `connection`: waits for the broker's confirm up to
/// [`CHANNEL_CLOSE_TIMEOUT`], or [`CLOSE_TIMEOUT`] when the broker blocks the connection
/// (a memory or disk alarm: it reads nothing from it until the alarm clears).
pub async fn close_channel(connection: &Connection, channel: &Channel) {
    let timeout = if connection.status().blocked() {
        CLOSE_TIMEOUT
    } else {
        CHANNEL_CLOSE_TIMEOUT
    };
    let _ = tokio::time::timeout(timeout, channel.close(200, "shutting down".into())).await;
}

/// Connects, retrying with [`backoff::policy`] (100 ms doubling to 5 s) until it succeeds.
/// Services start in any order in a cluster, so an absent broker is a wait, not a crash.
pub async fn connect_with_backoff(url: &str, name: &str) -> Connection {
    (|| connect(url, name))
        .retry(backoff::policy())
        .sleep(tokio::time::sleep)
        .notify(|error, wait| {
            tracing::warn!(url = %redact_url(url), %error, retry_in_ms = wait.as_millis() as u64, "RabbitMQ unreachable");
        })
        .await
        .expect("backoff::policy() never gives up")
}

/// Opens a channel with publisher confirms on and declares the topology.
pub async fn open_confirm_channel(
    connection: &Connection,
    topology: &Topology,
) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    declare_topology(&channel, topology).await?;
    Ok(channel)
}

/// Declares every exchange, queue and binding. Safe to call repeatedly and concurrently.
pub async fn declare_topology(channel: &Channel, topology: &Topology) -> lapin::Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    for exchange in [
        &topology.payments_exchange,
        &topology.decisions_exchange,
        &topology.dead_letter_exchange,
    ] {
        channel
            .exchange_declare(
                exchange.as_str().into(),
                ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
    }
    for (binding, dead_letter_key) in topology.queues() {
        channel
            .queue_declare(
                binding.queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                queue_arguments(topology, dead_letter_key),
            )
            .await?;
        channel
            .queue_bind(
                binding.queue.as_str().into(),
                binding.exchange.as_str().into(),
                binding.routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
}

/// Arguments of a quorum queue; work queues (those with a dead-letter key) also get the
/// delivery limit and safe dead-lettering.
fn queue_arguments(topology: &Topology, dead_letter_key: Option<&str>) -> FieldTable {
    let mut arguments = FieldTable::default();
    let mut set = |key: &str, value: AMQPValue| {
        arguments.insert(key.into(), value);
    };
    set("x-queue-type", AMQPValue::LongString("quorum".into()));
    if let Some(dead_letter_key) = dead_letter_key {
        // A message rejected without requeue, or delivered more than the limit, goes to the
        // dead-letter exchange instead of vanishing. Consumers normally dead-letter
        // explicitly (with a reason header); this is the safety net.
        set(
            "x-dead-letter-exchange",
            AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
        );
        set(
            "x-dead-letter-routing-key",
            AMQPValue::LongString(dead_letter_key.into()),
        );
        let limit = i32::try_from(topology.delivery_limit).unwrap_or(i32::MAX);
        set("x-delivery-limit", AMQPValue::LongInt(limit));
        // At-least-once: the broker keeps a dead letter until the dead-letter queue has
        // confirmed it (the default, at-most-once, can drop it). It requires reject-publish
        // overflow; no length limit is set, so nothing is ever rejected for it.
        set(
            "x-dead-letter-strategy",
            AMQPValue::LongString("at-least-once".into()),
        );
        set("x-overflow", AMQPValue::LongString("reject-publish".into()));
    }
    arguments
}

/// Properties of every message paysys publishes: persistent JSON.
pub fn persistent_json(message_id: &str, headers: FieldTable) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(message_id.into())
        .with_headers(headers)
}

/// Publishes with the mandatory flag and returns the broker's confirmation future, so
/// callers can pipeline many publishes and await the confirms together.
pub async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<lapin::PublisherConfirm, PublishError> {
    Ok(channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            properties,
        )
        .await?)
}

/// Turns a confirmation into success only for a plain ack of a routed message.
pub fn check_confirmation(confirmation: Confirmation) -> Result<(), PublishError> {
    match confirmation {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(_)) => Err(PublishError::Unroutable),
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::ConfirmsNotEnabled),
    }
}

/// Publishes one message and waits for its confirmation.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
) -> Result<(), PublishError> {
    let confirm = publish(channel, exchange, routing_key, body, properties).await?;
    check_confirmation(confirm.await?)
}

/// Sends `body` to the dead-letter exchange with the reason and source queue in headers,
/// and waits for the broker to confirm it. The caller acks the original only afterwards, so
/// a poison message is moved, never dropped.
pub async fn dead_letter(
    channel: &Channel,
    topology: &Topology,
    routing_key: &str,
    source_queue: &str,
    body: &[u8],
    reason: &str,
) -> Result<(), PublishError> {
    let mut headers = FieldTable::default();
    headers.insert(
        DEAD_LETTER_REASON_HEADER.into(),
        AMQPValue::LongString(reason.into()),
    );
    headers.insert(
        DEAD_LETTER_SOURCE_HEADER.into(),
        AMQPValue::LongString(source_queue.into()),
    );
    let properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    publish_confirmed(
        channel,
        &topology.dead_letter_exchange,
        routing_key,
        body,
        properties,
    )
    .await
}

/// Reads a string header from a delivery's properties.
pub fn header_str(properties: &BasicProperties, name: &str) -> Option<String> {
    let headers = properties.headers().as_ref()?;
    match headers.inner().get(name)? {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod queue_argument_tests {
    use super::*;
    use paysys_core::topology::DEAD_PAYMENTS_ROUTING_KEY;

    #[test]
    fn work_queues_are_quorum_queues_with_a_delivery_limit_and_safe_dead_letters() {
        let topology = Topology::new("t1");
        let work = queue_arguments(&topology, Some(DEAD_PAYMENTS_ROUTING_KEY));
        let work = work.inner();
        let text = |value: &str| Some(AMQPValue::LongString(value.into()));
        assert_eq!(work.get("x-queue-type").cloned(), text("quorum"));
        assert_eq!(work.get("x-delivery-limit"), Some(&AMQPValue::LongInt(50)));
        assert_eq!(
            work.get("x-dead-letter-strategy").cloned(),
            text("at-least-once")
        );
        assert_eq!(
            work.get("x-dead-letter-exchange").cloned(),
            text("t1.dead-letter")
        );
        let dead = queue_arguments(&topology, None);
        assert_eq!(dead.inner().get("x-queue-type").cloned(), text("quorum"));
        assert!(!dead.inner().contains_key("x-delivery-limit"));
    }
}
