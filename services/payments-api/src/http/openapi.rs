//! The OpenAPI document: its frame here, its paths from the routes themselves
//! (`http::routes`, each handler's `#[utoipa::path]`), its schemas from the types.

use axum::{Extension, Json};
use paysys_core::Currency;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, PathItem};
use utoipa::openapi::schema::{AllOfBuilder, ObjectBuilder, OneOfBuilder, Schema, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use crate::error::{FieldError, PROBLEM_JSON, Problem};
use crate::http::Document;
use crate::http::views::{
    DecisionView, DisputeView, EventView, PaymentChanged, PaymentPage, PaymentSummary, PaymentView,
    RefundCreated, RefundView,
};
use crate::http::webhooks::{
    AttemptPage, AttemptView, EndpointList, EndpointView, EndpointWithSecret,
};
use crate::store::disputes::DisputeReason;
use crate::validation::{
    CancelRequest, CreateEndpointRequest, CreatePaymentRequest, DisputeRequest,
};
use crate::webhooks::EventType;
use crate::webhooks::events::{EventPage, WebhookEvent};

#[derive(OpenApi)]
#[openapi(
    info(title = "paysys payments API", description = "Take, inspect, capture, cancel, refund and dispute payments under `/v1`; `POST /payments` is the original demo's request, kept as it was. Every error is RFC 9457 problem details (`Problem`, `application/problem+json`); every response has `X-Request-Id`."),
    components(schemas(
        CreatePaymentRequest, CancelRequest, PaymentChanged, PaymentView, PaymentPage,
        DecisionView, EventView, Problem, FieldError, DisputeRequest, DisputeView,
        DisputeReason, paysys_core::PaymentStatus, paysys_core::Outcome, paysys_core::Reason,
        paysys_core::ModelScore, RefundView, RefundCreated, PaymentSummary,
        CreateEndpointRequest, EndpointView, EndpointWithSecret,
        EndpointList, AttemptView, AttemptPage, EventType, WebhookEvent, EventPage,
    )),
    modifiers(&Security),
    tags(
        (name = "payments", description = "Payments and their lifecycle"),
        (name = "webhooks", description = "Signed notifications of every change of a payment, and the events they carry (docs/webhooks.md)"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Authorization",
                "An API key, alone or as `Bearer <key>`",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn serve(Extension(document): Extension<Document>) -> Json<utoipa::openapi::OpenApi> {
    Json(
        document
            .get()
            .expect("set when the router was built")
            .clone(),
    )
}

/// Adds the original demo's `POST /payments` to the document: the `/v1` create operation
/// with the demo's `201` body (`PaymentChanged`), from the unversioned routes' document.
pub fn add_demo_alias(openapi: &mut OpenApiDoc, unversioned: &OpenApiDoc) {
    let Some(mut create) = unversioned
        .paths
        .get_path_operation("/payments", HttpMethod::Post)
        .cloned()
    else {
        panic!("the unversioned routes have POST /payments");
    };
    create.operation_id = Some("create_demo".into());
    create.summary = Some("Create a payment: the original demo's request and answer.".into());
    create.description = Some(
        "The same as `POST /v1/payments`, answering with the original demo's body \
         (`{\"StatusCode\": 201, \"Status\": \"Success\", \"PaymentId\": ...}`)."
            .into(),
    );
    if let Some(RefOr::T(created)) = create.responses.responses.get_mut("201") {
        created.content.insert(
            "application/json".into(),
            Content::new(Some(Ref::from_schema_name("PaymentChanged"))).into(),
        );
    }
    openapi
        .paths
        .add_path_operation("/payments", vec![HttpMethod::Post], create);
}

/// What the routes' own declarations cannot say, applied to the whole document once it is
/// assembled (`http::router`): errors are `application/problem+json`; the create operations
/// link to what can follow (get, capture, cancel, refund: tools and schemathesis's stateful
/// phase follow them); the create body's amount has the decimals of its currency.
pub fn finish(openapi: &mut OpenApiDoc) {
    for item in openapi.paths.paths.values_mut() {
        for operation in operations(item) {
            for (status, response) in operation.responses.responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                if !status.starts_with('2')
                    && let Some(content) = response.content.shift_remove("application/json")
                {
                    response.content.insert(PROBLEM_JSON.into(), content);
                }
            }
        }
    }
    link_create(openapi, "/v1/payments", "/id");
    link_create(openapi, "/payments", "/PaymentId");
    amounts_by_currency(openapi);
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Links from a create operation's `201` to the operations on the created payment.
fn link_create(openapi: &mut OpenApiDoc, path: &str, id_pointer: &str) {
    let id = format!("$response.body#{id_pointer}");
    let links = [
        (
            "GetPayment",
            "get_one",
            "Read the payment, its decision and history",
        ),
        ("CapturePayment", "capture", "Capture it once approved"),
        ("CancelPayment", "cancel", "Cancel it"),
        ("RefundPayment", "refunds", "Refund it once captured"),
    ];
    let Some(item) = openapi.paths.paths.get_mut(path) else {
        return;
    };
    let Some(RefOr::T(created)) = item
        .post
        .as_mut()
        .and_then(|create| create.responses.responses.get_mut("201"))
    else {
        return;
    };
    for (name, operation_id, description) in links {
        created.links.insert(
            name.into(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(operation_id)
                    .parameter("id", id.as_str())
                    .description(description)
                    .build(),
            ),
        );
    }
}

/// The create body's `amount` has at most its currency's decimals: one alternative per
/// exponent, naming its currencies, with the amount a multiple of its minor unit.
fn amounts_by_currency(openapi: &mut OpenApiDoc) {
    let Some(components) = openapi.components.as_mut() else {
        return;
    };
    let Some(RefOr::T(request)) = components.schemas.get("CreatePaymentRequest").cloned() else {
        return;
    };
    let mut by_exponent = std::collections::BTreeMap::<u32, Vec<&'static str>>::new();
    for currency in Currency::all() {
        by_exponent
            .entry(currency.exponent())
            .or_default()
            .push(currency.code());
    }
    let alternatives = by_exponent.into_iter().map(|(exponent, codes)| {
        let step = rust_decimal::Decimal::new(1, exponent);
        ObjectBuilder::new()
            .property(
                "currency",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(codes)),
            )
            .property(
                "amount",
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .multiple_of(Some(step.to_string().parse::<f64>().expect("a decimal")))
                    .description(Some(format!(
                        "{exponent} decimal places at most in these currencies"
                    ))),
            )
            .into()
    });
    let by_currency = alternatives
        .fold(OneOfBuilder::new(), |one_of, alternative: RefOr<Schema>| {
            one_of.item(alternative)
        })
        .build();
    components.schemas.insert(
        "CreatePaymentRequest".into(),
        RefOr::T(Schema::AllOf(
            AllOfBuilder::new()
                .item(request)
                .item(RefOr::T(Schema::OneOf(by_currency)))
                .description(Some(
                    "The original demo's body; `amount` has at most its currency's decimals",
                ))
                .build(),
        )),
    );
}

#[cfg(test)]
mod tests {
    /// `openapi.json` is the document the API serves: a change of a route, a body or a
    /// constraint shows in the diff of a commit (and clients can be generated from the file).
    #[test]
    fn the_committed_document_is_the_served_one() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json");
        let served = serde_json::to_string_pretty(&crate::http::openapi_document()).unwrap() + "\n";
        if std::env::var_os("UPDATE_OPENAPI").is_some() {
            std::fs::write(path, &served).unwrap();
            return;
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == served,
            "services/payments-api/openapi.json differs from the document the API serves; \
             regenerate it with `UPDATE_OPENAPI=1 cargo test -p payments-api --lib \
             the_committed_document` and commit it"
        );
    }
}
