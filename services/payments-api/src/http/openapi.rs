//! The OpenAPI document, generated from the handlers and types.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, FieldError};
use crate::http::views::{DecisionView, EventView, PaymentChanged, PaymentPage, PaymentView};
use crate::http::{health, payments};
use crate::validation::CreatePaymentRequest;

#[derive(OpenApi)]
#[openapi(
    info(title = "paysys payments API", description = "Take, inspect, capture and cancel payments. Every error answers with ErrorBody."),
    paths(
        payments::create, payments::list, payments::get_one, payments::capture,
        payments::capture_put, payments::cancel,
        health::healthz, health::readyz, health::metrics, serve,
    ),
    components(schemas(
        CreatePaymentRequest, PaymentChanged, PaymentView, PaymentPage,
        DecisionView, EventView, ErrorBody, FieldError,
        paysys_core::PaymentStatus, paysys_core::Outcome, paysys_core::Reason,
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
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
