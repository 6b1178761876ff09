//! The payment status machine.
//!
//! ```text
//! pending ──▶ approved ──▶ captured
//!    │  └───▶ declined
//!    │           approved ──▶ canceled
//!    └──────────────────────▶ canceled
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PaymentStatus {
    /// Accepted and durable, waiting for the risk decision.
    Pending,
    /// The risk engine approved it; it can be captured or canceled.
    Approved,
    /// The risk engine declined it. Final.
    Declined,
    /// Funds captured. Final.
    Captured,
    /// Canceled by the client before capture. Final.
    Canceled,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 5] = [
        Self::Pending,
        Self::Approved,
        Self::Declined,
        Self::Captured,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Captured => "captured",
            Self::Canceled => "canceled",
        }
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
        )
    }

    /// The statuses a payment may move to `next` from; used by the store to make the
    /// transition a single conditional UPDATE.
    pub fn sources_of(next: PaymentStatus) -> Vec<PaymentStatus> {
        Self::ALL
            .into_iter()
            .filter(|from| from.can_become(next))
            .collect()
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown payment status '{0}' (expected one of pending, approved, declined, captured, canceled)"
)]
pub struct UnknownStatus(pub String);

impl FromStr for PaymentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::PaymentStatus::*;
    use super::*;

    #[test]
    fn allowed_transitions_are_exactly_the_documented_ones() {
        let allowed: Vec<_> = PaymentStatus::ALL
            .into_iter()
            .flat_map(|from| PaymentStatus::ALL.into_iter().map(move |to| (from, to)))
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
            ]
        );
    }

    #[test]
    fn final_states_have_no_exit() {
        for from in [Declined, Captured, Canceled] {
            assert!(
                PaymentStatus::ALL
                    .into_iter()
                    .all(|to| !from.can_become(to))
            );
        }
    }

    #[test]
    fn parses_its_own_names() {
        for status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
        }
        assert!("PENDING".parse::<PaymentStatus>().is_err());
        assert_eq!(PaymentStatus::sources_of(Canceled), vec![Pending, Approved]);
    }
}
