//! The payments API's decision decoder: any bytes either decode into a decision that survives
//! an encode/decode round trip, or are refused with a reason. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paysys_core::DecisionMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(decision) = DecisionMessage::decode(data) {
        let again = DecisionMessage::decode(&decision.encode()).expect("re-encoded decision decodes");
        assert_eq!(again, decision);
    }
});
