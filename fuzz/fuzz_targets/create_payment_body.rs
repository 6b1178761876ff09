//! The `POST /payments` body parser: any bytes either parse into a payment whose amount is
//! positive and within the maximum, or are refused with field errors. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

fuzz_target!(|data: &[u8]| {
    let max = Decimal::from(1_000_000);
    match payments_api::validation::parse_new_payment(data, max) {
        Ok(payment) => {
            assert!(payment.money.minor > 0);
            assert!(payment.money.to_decimal() <= max);
        }
        Err(errors) => assert!(!errors.is_empty()),
    }
});
