//! `paymentsApi.auth.jwt.jwksUrl` on a real API server: accepted by the CRD, rendered into the
//! API's environment in place of the PEM key, which the Secret then need not hold.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;

use crate::reconcile::create_secret;
use crate::support::{Operator, apply_system, env, wait_condition};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_jwks_url_reaches_the_api_instead_of_a_public_key() {
    let Some(env) = env("jwks-url").await else {
        return;
    };
    let _operator = Operator::start(env.client.clone(), &env.namespace);
    // Only API keys in the Secret: with a JWKS, no jwt-public-key.pem is required.
    create_secret(
        &env,
        "shop-auth",
        &[("api-keys", "checkout=0123456789abcdef0123")],
    )
    .await;
    apply_system(
        &env,
        "
apiVersion: paysys.io/v1alpha1
kind: PaymentSystem
metadata:
  name: shop
spec:
  paymentsApi:
    auth:
      secretName: shop-auth
      jwt:
        algorithm: RS256
        jwksUrl: https://idp.example.com/.well-known/openid-configuration
        issuer: https://idp.example.com
",
    )
    .await;
    wait_condition(&env, "shop", "Degraded", "False", TIMEOUT).await;
    let deployment = Api::<Deployment>::namespaced(env.client.clone(), &env.namespace)
        .get("shop-payments-api")
        .await
        .unwrap();
    let container = &deployment.spec.template.spec.unwrap().containers[0];
    let env_of = |name: &str| {
        container
            .env
            .iter()
            .flatten()
            .find(|var| var.name == name)
            .and_then(|var| var.value.clone())
    };
    assert_eq!(
        env_of("JWT_JWKS_URL").as_deref(),
        Some("https://idp.example.com/.well-known/openid-configuration")
    );
    assert_eq!(env_of("JWT_ALGORITHM").as_deref(), Some("RS256"));
    assert_eq!(
        env_of("JWT_ISSUER").as_deref(),
        Some("https://idp.example.com")
    );
    assert_eq!(env_of("JWT_PUBLIC_KEY_FILE"), None);
}
