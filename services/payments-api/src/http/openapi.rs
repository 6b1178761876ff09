//! The OpenAPI document: its frame here, its paths from the routes themselves
//! (`http::routes`, each handler's `#[utoipa::path]`), its schemas from the types.

use axum::{Extension, Json};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, FieldError};
use crate::http::Document;
use crate::http::views::{
    DecisionView, DisputeView, EventView, PaymentChanged, PaymentPage, PaymentView, RefundCreated,
    RefundView,
};
use crate::store::disputes::DisputeReason;
use crate::validation::{CancelRequest, CreatePaymentRequest, DisputeRequest};

#[derive(OpenApi)]
#[openapi(
    info(title = "paysys payments API", description = "Take, inspect, capture, cancel, refund and dispute payments. Every error answers with ErrorBody."),
    components(schemas(
        CreatePaymentRequest, CancelRequest, PaymentChanged, PaymentView, PaymentPage,
        DecisionView, EventView, ErrorBody, FieldError, DisputeRequest, DisputeView,
        DisputeReason, paysys_core::PaymentStatus, paysys_core::Outcome, paysys_core::Reason,
        paysys_core::ModelScore, RefundView, RefundCreated,
    )),
    modifiers(&Security),
    tags(
        (name = "payments", description = "Payments and their lifecycle"),
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
