//! The whole loop with real processes: create over HTTP, the risk engine decides, `GET`
//! shows the decision, and the risk engine logs in the original demo's form.

use std::time::Duration;

use paysys_system_tests::System;
use paysys_system_tests::driver::call;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_is_decided_and_the_decision_is_visible() {
    let _serial = paysys_system_tests::SERIAL.lock().await;
    // Rules mode with the default rules: a payer paying themselves is declined, others approved.
    let system = System::start_with(1, 1, &[("RISK_MODE", "rules")]).await;
    let base = &system.api_urls()[0];
    let user = uuid::Uuid::new_v4();
    let approved_body = json!({"amount": 70.5, "currency": "USD", "userId": user,
        "payeeId": uuid::Uuid::new_v4(), "paymentMethodId": uuid::Uuid::new_v4()});
    let declined_body = json!({"amount": 12, "currency": "EUR", "userId": user,
        "payeeId": user, "paymentMethodId": uuid::Uuid::new_v4()});

    let mut ids = Vec::new();
    for body in [approved_body, declined_body] {
        let (status, created) = call("POST", &format!("{base}/payments"), Some(body)).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["Status"], "Success");
        ids.push(created["PaymentId"].as_str().unwrap().to_owned());
    }

    let mut decided = Vec::new();
    for id in &ids {
        let payment = paysys_testkit::eventually(Duration::from_secs(20), || async {
            let (_, payment) = call("GET", &format!("{base}/payments/{id}"), None).await;
            (payment["status"] != "pending").then_some(payment)
        })
        .await
        .unwrap_or_else(|| panic!("payment {id} was never decided"));
        decided.push(payment);
    }
    assert_eq!(decided[0]["status"], "approved", "{}", decided[0]);
    assert_eq!(decided[0]["decision"]["outcome"], "approved");
    assert_eq!(decided[1]["status"], "declined", "{}", decided[1]);
    let reasons = decided[1]["decision"]["reasons"].as_array().unwrap();
    assert!(!reasons.is_empty(), "a decline says why: {}", decided[1]);
    assert!(decided[1]["decision"]["score"].as_u64().unwrap() >= 100);
    assert!(decided[1]["decision"]["rulesVersion"].is_string());

    // Capture works only after approval.
    let (status, _) = call("POST", &format!("{base}/payments/{}/capture", ids[0]), None).await;
    assert_eq!(status, 200);
    let (status, refused) =
        call("POST", &format!("{base}/payments/{}/capture", ids[1]), None).await;
    assert_eq!(status, 409);
    assert_eq!(refused["currentStatus"], "declined");

    // The risk engine's log reads like the original demo's.
    let log = std::fs::read_to_string(system.risks[0].log_path()).unwrap();
    assert!(log.contains("Received message: "), "{log}");
    assert!(
        log.contains(&format!("Payment {} approved.", ids[0])),
        "{log}"
    );
    assert!(
        log.contains(&format!("Payment {} declined.", ids[1])),
        "{log}"
    );
    system.shutdown().await;
}
