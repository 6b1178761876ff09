use axum::http::StatusCode;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::harness::*;

fn jwt(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn hour_from_now() -> i64 {
    chrono::Utc::now().timestamp() + 3600
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_auth_matrix() {
    let api =
        TestApi::start_with(&[("JWT_AUDIENCE", "paysys-api"), ("JWT_ISSUER", "test-idp")]).await;
    let claims = |sub: &str| json!({"sub": sub, "exp": hour_from_now(), "aud": "paysys-api", "iss": "test-idp"});

    let bearer = |token: String| format!("Bearer {token}");
    let mut expired = claims("carol");
    expired["exp"] = json!(chrono::Utc::now().timestamp() - 600);
    let mut wrong_audience = claims("carol");
    wrong_audience["aud"] = json!("another-api");
    let unsigned = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.",
            b64.encode(json!({"alg": "none", "typ": "JWT"}).to_string()),
            b64.encode(claims("carol").to_string())
        )
    };
    let refused: Vec<(&str, Option<String>)> = vec![
        ("no header", None),
        ("unknown key", Some("not-a-configured-key-0000".into())),
        ("wrong scheme", Some(format!("Basic {ALICE}"))),
        ("expired JWT", Some(bearer(jwt(expired, JWT_SECRET)))),
        (
            "wrong signature",
            Some(bearer(jwt(
                claims("carol"),
                "some-other-secret-0123456789abcdef",
            ))),
        ),
        ("alg none", Some(bearer(unsigned))),
        (
            "wrong audience",
            Some(bearer(jwt(wrong_audience, JWT_SECRET))),
        ),
    ];
    for (case, header) in &refused {
        let reply = api
            .post("/payments", header.as_deref(), &demo_payment())
            .await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
        assert_eq!(reply.body["status"], 401, "{case}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer", "{case}");
        let reply = api.get("/v1/payments", header.as_deref()).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case} on GET");
    }

    // A valid JWT's subject is the principal.
    let carol = bearer(jwt(claims("carol"), JWT_SECRET));
    let reply = api.post("/payments", Some(&carol), &demo_payment()).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.body);
    let carols = reply.body["PaymentId"].as_str().unwrap().to_owned();
    assert_eq!(
        api.get(&format!("/payments/{carols}"), Some(&carol))
            .await
            .status,
        StatusCode::OK
    );

    // Another principal's payment does not exist for the caller.
    let alices = api.create(&demo_payment()).await;
    for other in [BOB, carol.as_str()] {
        let reply = api.get(&format!("/payments/{alices}"), Some(other)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        let reply = api
            .post(
                &format!("/payments/{alices}/cancel"),
                Some(other),
                &json!({}),
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
    }
    let listed = api.get("/v1/payments", Some(BOB)).await;
    assert_eq!(listed.body["data"], json!([]));
    assert_eq!(
        api.get(
            &format!("/payments/{alices}"),
            Some(&format!("Bearer {ALICE}"))
        )
        .await
        .status,
        StatusCode::OK
    );

    // Failures are counted by reason; no credential appears in the metrics.
    let metrics = api
        .get("/metrics", None)
        .await
        .body
        .as_str()
        .unwrap()
        .to_owned();
    for reason in [
        "missing",
        "unknown_key",
        "malformed",
        "expired",
        "bad_signature",
        "wrong_audience",
    ] {
        assert!(
            metrics.contains(&format!("reason=\"{reason}\"")),
            "{reason} not counted:\n{metrics}"
        );
    }
    assert!(!metrics.contains(ALICE));
    api.stop().await;
}
