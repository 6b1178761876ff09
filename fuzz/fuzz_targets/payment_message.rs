//! The risk engine's input decoder: any bytes either decode into a message that survives an
//! encode/decode round trip unchanged, or are refused with a reason. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use paysys_core::PaymentMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = PaymentMessage::decode(data) {
        let again = PaymentMessage::decode(&message.encode()).expect("re-encoded message decodes");
        assert_eq!(again, message);
    }
});
