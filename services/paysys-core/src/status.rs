//! The payment status machine.
//!
//! ```text
//! pending ──▶ approved ──▶ captured ──▶ partially_refunded ──▶ refunded
//!    │  └───▶ declined       └──────────────────────────────▶ refunded
//!    │           approved ──▶ canceled
//!    └──────────────────────▶ canceled
//! ```
//!
//! A refund of part of what is left keeps a partially refunded payment where it is
//! (`partially_refunded → partially_refunded`); the amounts are the store's, not states.

use serde::{Deserialize, Serialize};
use strum::VariantArray;

// One list of states: the variants below are the API's strings (serde, strum), the database
// column's values (the `sqlx` feature binds and decodes them as text) and the OpenAPI enum.
// Adding a state is this enum plus its edges in `can_become`, and a migration extending the
// `payments.status` CHECK (docs/architecture.md, "How to add a payment state"); a
// payments-api test fails when the CHECK and this list disagree.
/// Where a payment is in its lifecycle.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(
    serialize_all = "snake_case",
    parse_err_ty = UnknownStatus,
    parse_err_fn = UnknownStatus::from
)]
pub enum PaymentStatus {
    /// Accepted and durable, waiting for the risk decision.
    Pending,
    /// The risk engine approved it; it can be captured or canceled.
    Approved,
    /// The risk engine declined it. Final.
    Declined,
    /// Funds captured; it can be refunded, in parts or whole.
    Captured,
    /// Canceled by the client before capture. Final.
    Canceled,
    /// Part of the captured amount was refunded; the rest can be, in one or more refunds.
    PartiallyRefunded,
    /// The whole captured amount was refunded. Final.
    Refunded,
}

impl PaymentStatus {
    /// Every state, in declaration order.
    pub const ALL: &'static [PaymentStatus] = Self::VARIANTS;

    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the machine allows moving from `self` to `next`.
    pub fn can_become(self, next: PaymentStatus) -> bool {
        use PaymentStatus::*;
        matches!(
            (self, next),
            (Pending, Approved)
                | (Pending, Declined)
                | (Pending, Canceled)
                | (Approved, Captured)
                | (Approved, Canceled)
                | (Captured, PartiallyRefunded)
                | (Captured, Refunded)
                | (PartiallyRefunded, PartiallyRefunded)
                | (PartiallyRefunded, Refunded)
        )
    }

    /// The statuses a payment may move to `next` from; used by the store to make the
    /// transition a single conditional UPDATE.
    pub fn sources_of(next: PaymentStatus) -> Vec<PaymentStatus> {
        Self::ALL
            .iter()
            .copied()
            .filter(|from| from.can_become(next))
            .collect()
    }
}

/// A string that names no state; its message lists the states from the enum itself.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment status '{0}' (expected one of {expected})", expected = expected())]
pub struct UnknownStatus(pub String);

impl From<&str> for UnknownStatus {
    fn from(text: &str) -> Self {
        Self(text.to_owned())
    }
}

fn expected() -> String {
    PaymentStatus::ALL
        .iter()
        .map(|status| status.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The status column is `text` (constrained by a CHECK): bound and decoded as the same
/// strings as the API's, so no query spells a state.
#[cfg(feature = "sqlx")]
mod sql {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::{PgArgumentBuffer, PgHasArrayType, PgTypeInfo, PgValueRef};
    use sqlx::{Decode, Encode, Postgres, Type};

    use super::PaymentStatus;

    impl Type<Postgres> for PaymentStatus {
        fn type_info() -> PgTypeInfo {
            <&str as Type<Postgres>>::type_info()
        }

        fn compatible(ty: &PgTypeInfo) -> bool {
            <&str as Type<Postgres>>::compatible(ty)
        }
    }

    impl PgHasArrayType for PaymentStatus {
        fn array_type_info() -> PgTypeInfo {
            <&str as PgHasArrayType>::array_type_info()
        }
    }

    impl Encode<'_, Postgres> for PaymentStatus {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            <&str as Encode<Postgres>>::encode(self.as_str(), buf)
        }
    }

    impl Decode<'_, Postgres> for PaymentStatus {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            Ok(<&str as Decode<Postgres>>::decode(value)?.parse()?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn allowed_transitions_are_exactly_the_documented_ones() {
        let allowed: Vec<_> = PaymentStatus::ALL
            .iter()
            .flat_map(|&from| PaymentStatus::ALL.iter().map(move |&to| (from, to)))
            .filter(|(from, to)| from.can_become(*to))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Pending, Approved),
                (Pending, Declined),
                (Pending, Canceled),
                (Approved, Captured),
                (Approved, Canceled),
                (Captured, PartiallyRefunded),
                (Captured, Refunded),
                (PartiallyRefunded, PartiallyRefunded),
                (PartiallyRefunded, Refunded),
            ]
        );
    }

    #[test]
    fn final_states_have_no_exit() {
        for from in [Declined, Canceled, Refunded] {
            assert!(PaymentStatus::ALL.iter().all(|&to| !from.can_become(to)));
        }
    }

    #[test]
    fn parses_its_own_names() {
        for &status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
            assert_eq!(status.to_string(), status.as_str());
            // serde's spelling (the API, the OpenAPI enum) is strum's (the database).
            assert_eq!(
                serde_json::to_value(status).unwrap(),
                serde_json::json!(status.as_str())
            );
        }
        assert_eq!(
            "PENDING".parse::<PaymentStatus>().unwrap_err().to_string(),
            "unknown payment status 'PENDING' \
             (expected one of pending, approved, declined, captured, canceled, \
             partially_refunded, refunded)"
        );
        assert_eq!(
            "partially_refunded".parse::<PaymentStatus>(),
            Ok(PartiallyRefunded)
        );
        assert_eq!(PaymentStatus::sources_of(Canceled), vec![Pending, Approved]);
    }
}
