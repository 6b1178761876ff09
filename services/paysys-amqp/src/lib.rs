//! RabbitMQ plumbing shared by the services: connecting with backoff, declaring the topology
//! (its names are `paysys_core::topology`), publishing persistent messages under publisher
//! confirms, and dead-lettering with a reason.

use lapin::Confirmation;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use paysys_core::topology::{
    DEAD_DECISIONS_ROUTING_KEY, DEAD_PAYMENTS_ROUTING_KEY, DECISION_ROUTING_KEY,
    PAYMENT_ROUTING_KEY, Topology,
};
use paysys_runtime::backoff::{self, Retryable};
use paysys_runtime::config::redact_url;

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

/// Opens one connection; `name` shows in the RabbitMQ management UI.
pub async fn connect(url: &str, name: &str) -> lapin::Result<Connection> {
    let properties = ConnectionProperties::default().with_connection_name(name.into());
    Connection::connect(url, properties).await
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
    let queues = [
        (
            &topology.payments_queue,
            &topology.payments_exchange,
            PAYMENT_ROUTING_KEY,
            Some(DEAD_PAYMENTS_ROUTING_KEY),
        ),
        (
            &topology.decisions_queue,
            &topology.decisions_exchange,
            DECISION_ROUTING_KEY,
            Some(DEAD_DECISIONS_ROUTING_KEY),
        ),
        (
            &topology.payments_dead_queue,
            &topology.dead_letter_exchange,
            DEAD_PAYMENTS_ROUTING_KEY,
            None,
        ),
        (
            &topology.decisions_dead_queue,
            &topology.dead_letter_exchange,
            DEAD_DECISIONS_ROUTING_KEY,
            None,
        ),
    ];
    for (queue, exchange, routing_key, dead_letter_key) in queues {
        let mut arguments = FieldTable::default();
        if let Some(dead_letter_key) = dead_letter_key {
            // A rejected message goes to the dead-letter exchange instead of vanishing;
            // consumers normally dead-letter explicitly (with a reason header) and this is
            // the safety net for anything rejected without one.
            arguments.insert(
                "x-dead-letter-exchange".into(),
                AMQPValue::LongString(topology.dead_letter_exchange.as_str().into()),
            );
            arguments.insert(
                "x-dead-letter-routing-key".into(),
                AMQPValue::LongString(dead_letter_key.into()),
            );
        }
        channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                arguments,
            )
            .await?;
        channel
            .queue_bind(
                queue.as_str().into(),
                exchange.as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }
    Ok(())
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
