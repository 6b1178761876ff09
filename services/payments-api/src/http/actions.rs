//! Actions on a payment (`POST /payments/{id}/<action>`): one row each in [`ACTIONS`], served
//! by one handler ([`perform`]) and documented from the same row.
//!
//! A row says everything that differs between actions: the path segment, the HTTP methods,
//! the effect (the state the payment moves to), the request body's type, and the OpenAPI
//! texts. Everything they share is here once: the id parsing, owner scoping, the
//! `Idempotency-Key` handling, the `409` for a transition the status machine refuses, and the
//! operation's parameters, responses and security. Adding an action is one row, plus its body
//! type (a struct deriving `Deserialize` and `ToSchema`, with an [`ActionBody`] impl).

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{MethodFilter, MethodRouter};
use paysys_core::{Money, PaymentStatus};
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use sqlx::{Connection, PgConnection};
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterIn, PathItem, Paths,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{Content, Ref, RefOr, Required, ResponseBuilder, Schema};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::UtoipaMethodRouter;
use uuid::Uuid;

use crate::error::{ApiError, FieldError};
use crate::http::extract::{Caller, IdempotencyKey, JsonBody};
use crate::http::idempotent::{self, Reply};
use crate::http::payments::parse_id;
use crate::http::views::{PaymentChanged, PaymentSummary, RefundCreated, RefundView};
use crate::http::{AppState, Version};
use crate::store::payments::{self, Transition};
use crate::store::refunds;
use crate::validation::{
    Amount, CancelRequest, CaptureRequest, RefundRequest, Validated, read_optional,
};

/// Every action on a payment, in the order the OpenAPI document lists them.
pub static ACTIONS: &[Action] = &[
    Action {
        name: "capture",
        methods: &[Method::Post, Method::Put],
        effect: Effect::Become {
            to: PaymentStatus::Captured,
            body: Body::of::<CaptureRequest>(),
        },
        summary: "Capture an approved payment.",
        description: "`PUT` is accepted too (the original demo's client used it); both forms \
                      are the same request, also for `Idempotency-Key`.",
        done: "Captured",
        conflict: "Not approved (CurrentStatus says what it is), or the Idempotency-Key is in \
                   flight",
    },
    Action {
        name: "cancel",
        methods: &[Method::Post],
        effect: Effect::Become {
            to: PaymentStatus::Canceled,
            body: Body::of::<CancelRequest>(),
        },
        summary: "Cancel a pending or approved payment, with an optional `reason`.",
        description: "The reason is kept in the payment's audit trail.",
        done: "Canceled",
        conflict: "Already final (CurrentStatus says what it is), or the Idempotency-Key is in \
                   flight",
    },
    Action {
        name: "refunds",
        methods: &[Method::Post],
        effect: Effect::Refund {
            body: Body::of::<RefundRequest>(),
        },
        summary: "Refund a captured payment, whole or in part.",
        description: "Without an `amount`, refunds all that is left. Several partial refunds \
                      may follow each other until nothing is left; their sum never exceeds \
                      the captured amount, however many run at once. The payment becomes \
                      `partially_refunded`, or `refunded` once nothing is left.",
        done: "Refund recorded",
        conflict: "Not captured nor partially refunded (CurrentStatus says what it is), more \
                   than is left to refund (the message names the amount left), or the \
                   Idempotency-Key is in flight",
    },
];

/// One action on a payment.
pub struct Action {
    /// The path segment after `/payments/{id}/`.
    pub name: &'static str,
    /// The methods it answers to; the first is its operation id, the others get a suffix.
    pub methods: &'static [Method],
    pub effect: Effect,
    /// The OpenAPI operation's summary and description.
    pub summary: &'static str,
    pub description: &'static str,
    /// The OpenAPI description of the success response and of the `409`.
    pub done: &'static str,
    pub conflict: &'static str,
}

/// What an action does to the payment.
pub enum Effect {
    /// Moves the payment to `to` if the status machine allows it; the body, validated, is the
    /// audit event's detail.
    Become {
        to: PaymentStatus,
        body: Body<Option<serde_json::Value>>,
    },
    /// Records a refund of the body's amount (all that is left without one), moving a
    /// captured or partially refunded payment to `partially_refunded` or `refunded`.
    Refund { body: Body<Option<Amount>> },
}

/// An action's request body: optional (no body, JSON `null`, or the object), of the type `T`
/// was made from ([`Body::of`]), validated into `V`.
pub struct Body<V> {
    schema: fn() -> (String, RefOr<Schema>),
    read: fn(&[u8]) -> Validated<V>,
}

impl<V> Body<V> {
    pub const fn of<T: ActionBody<Valid = V>>() -> Self {
        Self {
            schema: schema_of::<T>,
            read: read_body::<T>,
        }
    }
}

/// A request body type of an action: what it validates into.
pub trait ActionBody: DeserializeOwned + ToSchema {
    type Valid;
    fn check(self, errors: Vec<FieldError>) -> Validated<Self::Valid>;
}

impl ActionBody for CaptureRequest {
    type Valid = Option<serde_json::Value>;

    fn check(self, errors: Vec<FieldError>) -> Validated<Self::Valid> {
        self.validate(errors).map(|()| None)
    }
}

impl ActionBody for RefundRequest {
    type Valid = Option<Amount>;

    fn check(self, errors: Vec<FieldError>) -> Validated<Self::Valid> {
        self.validate(errors)
    }
}

impl ActionBody for CancelRequest {
    type Valid = Option<serde_json::Value>;

    fn check(self, errors: Vec<FieldError>) -> Validated<Self::Valid> {
        let reason = self.validate(errors)?;
        Ok(reason.map(|reason| serde_json::json!({ "reason": reason })))
    }
}

fn schema_of<T: ToSchema>() -> (String, RefOr<Schema>) {
    (T::name().into_owned(), T::schema())
}

fn read_body<T: ActionBody>(body: &[u8]) -> Validated<T::Valid> {
    let (request, errors) = read_optional::<T>(body)?;
    request.check(errors)
}

impl Action {
    pub fn path(&self) -> String {
        format!("/payments/{{id}}/{}", self.name)
    }

    /// The action's routes and their OpenAPI operations, for `OpenApiRouter::routes`.
    pub fn routes(&'static self) -> UtoipaMethodRouter<AppState> {
        let mut router = MethodRouter::new();
        let mut item = PathItem::default();
        for (index, &method) in self.methods.iter().enumerate() {
            let handler = move |state, version, caller, key, id, body| {
                perform(self, state, version, caller, key, id, body)
            };
            router = router.on(method.filter(), handler);
            item.merge_operations(PathItem::new(method.openapi(), self.operation(index)));
        }
        let (name, schema) = self.body_schema();
        let paths = Paths::builder().path(self.path(), item).build();
        (vec![(name, schema)], paths, router)
    }

    fn body_schema(&self) -> (String, RefOr<Schema>) {
        match &self.effect {
            Effect::Become { body, .. } => (body.schema)(),
            Effect::Refund { body } => (body.schema)(),
        }
    }

    fn operation(&self, index: usize) -> Operation {
        let operation_id = match index {
            0 => self.name.to_owned(),
            _ => format!("{}_{}", self.name, self.methods[index].name()),
        };
        let (body_name, _) = self.body_schema();
        let (status, done) = match &self.effect {
            Effect::Become { .. } => (StatusCode::OK, "PaymentSummary"),
            Effect::Refund { .. } => (StatusCode::CREATED, "RefundCreated"),
        };
        let error = |description: &str| {
            ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("Problem"))),
                )
                .build()
        };
        OperationBuilder::new()
            .tag("payments")
            .operation_id(Some(operation_id))
            .summary(Some(self.summary))
            .description(Some(self.description))
            .parameters(Some(PathParams::into_params(|| Some(ParameterIn::Path))))
            .parameters(Some(KeyHeader::into_params(|| Some(ParameterIn::Header))))
            .request_body(Some(
                RequestBodyBuilder::new()
                    .description(Some("Optional: no body, `null`, or this object"))
                    .required(Some(Required::False))
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name(body_name))),
                    )
                    .build(),
            ))
            .response(
                status.as_str(),
                ResponseBuilder::new()
                    .description(self.done)
                    .content(
                        "application/json",
                        Content::new(Some(Ref::from_schema_name(done))),
                    )
                    .build(),
            )
            .response("400", error("Bad id or body"))
            .response("401", error("Missing or invalid credentials"))
            .response("404", error("No such payment for this caller"))
            .response("409", error(self.conflict))
            .response("413", error("Body too large"))
            .response("415", error("Content-Type is not application/json"))
            .response(
                "422",
                error("The Idempotency-Key was used with a different request"),
            )
            .security(SecurityRequirement::new("api_key", Vec::<String>::new()))
            .security(SecurityRequirement::new("bearer", Vec::<String>::new()))
            .build()
    }
}

/// The path parameter every action takes.
#[derive(IntoParams)]
#[allow(dead_code)] // only documents the path
struct PathParams {
    /// Payment id
    id: Uuid,
}

/// The header every action takes.
#[derive(IntoParams)]
#[allow(dead_code)] // only documents the header
struct KeyHeader {
    /// Retries with the same key replay the first response
    #[param(rename = "Idempotency-Key", pattern = "^[!-~]{1,255}$")]
    key: Option<String>,
}

/// The HTTP methods an action may answer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Post,
    Put,
}

impl Method {
    fn filter(self) -> MethodFilter {
        match self {
            Self::Post => MethodFilter::POST,
            Self::Put => MethodFilter::PUT,
        }
    }

    fn openapi(self) -> HttpMethod {
        match self {
            Self::Post => HttpMethod::Post,
            Self::Put => HttpMethod::Put,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Post => "post",
            Self::Put => "put",
        }
    }
}

/// The one handler of every action.
async fn perform(
    action: &'static Action,
    State(app): State<AppState>,
    Extension(version): Extension<Version>,
    Caller(principal): Caller,
    IdempotencyKey(key): IdempotencyKey,
    Path(id): Path<String>,
    JsonBody(request): JsonBody<false>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Every method of an action is the same request (`PUT` capture is `POST` capture).
    let path = format!("{}/payments/{id}/{}", version.prefix(), action.name);
    let hash = idempotent::request_hash("POST", &path, &request);
    let owner = principal.0.clone();
    match action.effect {
        Effect::Become { to, ref body } => {
            let detail = (body.read)(&request).map_err(ApiError::Validation)?;
            // The audit trail's cause is the state's name (`captured`, `canceled`).
            let cause = to.as_str();
            idempotent::run(&app, &principal, key, hash, move |conn| {
                Box::pin(async move {
                    match payments::transition(conn, &owner, id, to, cause, detail).await? {
                        Transition::Done => Ok(match version {
                            Version::V1 => {
                                Reply::json(StatusCode::OK, &PaymentSummary { id, status: to })
                            }
                            Version::Unversioned => Reply::json(
                                StatusCode::OK,
                                &PaymentChanged::new(StatusCode::OK, id, to),
                            ),
                        }),
                        Transition::NotFound => Err(ApiError::payment_not_found()),
                        Transition::Refused { current } => Err(ApiError::InvalidStatus {
                            message: refusal(current, to),
                            current,
                        }),
                    }
                })
            })
            .await
        }
        Effect::Refund { ref body } => {
            let amount = (body.read)(&request).map_err(ApiError::Validation)?;
            let max_amount = app.limits.max_amount;
            let response = idempotent::run(&app, &principal, key, hash, move |conn| {
                Box::pin(refund(conn, owner, id, amount, max_amount))
            })
            .await?;
            // The refund is part of the payment (its `refunds`).
            let location = format!("/v1/payments/{id}");
            Ok(idempotent::with_location(response, |_| Some(location)).await)
        }
    }
}

/// Refunds `amount` (all that is left without one) of the owner's payment: the payment is
/// read under its row lock and updated once, with the refund and its audit event, in one
/// transaction (a savepoint when the `Idempotency-Key`'s transaction is already open).
async fn refund(
    conn: &mut PgConnection,
    owner: String,
    id: Uuid,
    amount: Option<Amount>,
    max_amount: Decimal,
) -> Result<Reply, ApiError> {
    let mut tx = conn.begin().await?;
    let payment = refunds::lock(&mut tx, &owner, id)
        .await?
        .ok_or_else(ApiError::payment_not_found)?;
    if !payment.status.can_become(PaymentStatus::Refunded) {
        return Err(ApiError::InvalidStatus {
            message: refusal(payment.status, PaymentStatus::Refunded),
            current: payment.status,
        });
    }
    let left = payment.left();
    let money = match amount {
        None => left,
        Some(Amount(text)) => Money::parse(&text, left.currency, max_amount)
            .map_err(|error| ApiError::validation("amount", error.to_string()))?,
    };
    if money.minor > left.minor {
        return Err(ApiError::RefundExceedsAmountLeft {
            requested: money,
            left,
            current: payment.status,
        });
    }
    let to = if money.minor == left.minor {
        PaymentStatus::Refunded
    } else {
        PaymentStatus::PartiallyRefunded
    };
    let refund_id = Uuid::now_v7();
    let detail = serde_json::json!({
        "refundId": refund_id,
        "amountMinor": money.minor,
        "currency": money.currency.code(),
    });
    let change = refunds::Change {
        refund_id,
        payment_id: id,
        amount_minor: money.minor,
        from: payment.status,
        to,
    };
    let refund = refunds::record(&mut tx, change, detail).await?;
    tx.commit().await?;
    let refunded = RefundCreated {
        refund: RefundView::new(refund, money.currency),
        payment_status: to,
        payment_refunded_amount_minor: payment.refunded_minor + money.minor,
    };
    Ok(Reply::json(StatusCode::CREATED, &refunded))
}

/// Why the status machine refuses `current → to`, naming the states it would accept.
fn refusal(current: PaymentStatus, to: PaymentStatus) -> String {
    let allowed: Vec<&str> = PaymentStatus::sources_of(to)
        .into_iter()
        .map(PaymentStatus::as_str)
        .collect();
    format!(
        "payment is {current}; only {} payments can be {to}",
        allowed.join(" or ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_the_current_status() {
        assert_eq!(
            refusal(PaymentStatus::Pending, PaymentStatus::Captured),
            "payment is pending; only approved payments can be captured"
        );
    }
}
