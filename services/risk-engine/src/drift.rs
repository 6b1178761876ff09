//! Feature drift: the population stability index (PSI) per feature between a model's training
//! distribution (its card's `drift_reference`) and the last `DRIFT_WINDOW` live feature
//! vectors.
//!
//! Cheap by construction: each observation adds one to a bucket count per feature and, once
//! the window is full, takes one from the bucket of the observation it pushes out (a ring of
//! bucket numbers remembers which). Nothing is ever re-scanned; the PSI itself is computed only
//! when `/metrics` is scraped, from the counts (a dozen buckets per feature).

use paysys_core::features::{FEATURE_COUNT, FEATURE_NAMES};

use crate::model::DriftReference;

/// Shares are floored at this before the logarithm, so an empty bucket on either side gives a
/// large but finite PSI (the contract's floor, the trainer's too).
pub const SHARE_FLOOR: f64 = 1e-4;
/// Default `DRIFT_WINDOW`: live feature vectors compared with the training distribution.
pub const DEFAULT_WINDOW: usize = 10_000;

/// PSI = Σ (a − e) · ln(a / e) over buckets, `a` the live share and `e` the expected one, both
/// floored at [`SHARE_FLOOR`].
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(&e, &a)| {
            let (e, a) = (e.max(SHARE_FLOOR), a.max(SHARE_FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// The sliding window of one model's live features.
#[derive(Debug)]
pub struct DriftWindow {
    /// The features with a reference: (index in the vector, reference, live count per bucket).
    features: Vec<(usize, DriftReference, Vec<u64>)>,
    /// Bucket numbers of the observations in the window, oldest first from `next`:
    /// `capacity` rows of `features.len()` entries.
    ring: Vec<u16>,
    capacity: usize,
    len: usize,
    next: usize,
}

impl DriftWindow {
    /// A window of `capacity` (at least 1) observations over the features `reference` covers
    /// (in feature order, `None` = no reference).
    pub fn new(reference: &[Option<DriftReference>], capacity: usize) -> Self {
        let features: Vec<_> = reference
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let r = r.as_ref()?;
                Some((i, r.clone(), vec![0; r.shares.len()]))
            })
            .collect();
        let capacity = capacity.max(1);
        Self {
            ring: vec![0; capacity * features.len()],
            features,
            capacity,
            len: 0,
            next: 0,
        }
    }

    /// Adds one live vector (`values` in feature order), pushing out the oldest once full.
    /// A vector of another length (another feature version) is ignored.
    pub fn observe(&mut self, values: &[f64]) {
        if values.len() != FEATURE_COUNT || self.features.is_empty() {
            return;
        }
        let width = self.features.len();
        let row = self.next * width;
        let full = self.len == self.capacity;
        for (k, (index, reference, counts)) in self.features.iter_mut().enumerate() {
            if full {
                counts[usize::from(self.ring[row + k])] -= 1;
            }
            let bucket = reference.bucket(values[*index]);
            counts[bucket] += 1;
            // A reference has at most 65,535 buckets (checked when the card is read).
            self.ring[row + k] = u16::try_from(bucket).expect("bucket numbers fit in u16");
        }
        self.next = (self.next + 1) % self.capacity;
        self.len = (self.len + 1).min(self.capacity);
    }

    /// Observations in the window now.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// PSI per referenced feature (name, value); empty while the window is empty.
    pub fn psi(&self) -> Vec<(&'static str, f64)> {
        if self.len == 0 {
            return Vec::new();
        }
        let n = self.len as f64;
        self.features
            .iter()
            .map(|(index, reference, counts)| {
                let actual: Vec<f64> = counts.iter().map(|&c| c as f64 / n).collect();
                (FEATURE_NAMES[*index], psi(&reference.shares, &actual))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference() -> Vec<Option<DriftReference>> {
        let mut r = vec![None; FEATURE_COUNT];
        r[0] = Some(DriftReference {
            edges: vec![10.0, 20.0],
            shares: vec![0.25, 0.5, 0.25],
        });
        r
    }

    fn vector(first: f64) -> Vec<f64> {
        let mut v = vec![0.0; FEATURE_COUNT];
        v[0] = first;
        v
    }

    #[test]
    fn psi_follows_the_formula_with_floored_shares() {
        assert_eq!(psi(&[0.5, 0.5], &[0.5, 0.5]), 0.0);
        let expected = (0.7 - 0.5) * (0.7_f64 / 0.5).ln() + (0.3 - 0.5) * (0.3_f64 / 0.5).ln();
        assert!((psi(&[0.5, 0.5], &[0.7, 0.3]) - expected).abs() < 1e-15);
        let empty = (1e-4 - 0.5) * (1e-4_f64 / 0.5).ln() + (1.0 - 0.5) * (1.0_f64 / 0.5).ln();
        assert!((psi(&[0.5, 0.5], &[0.0, 1.0]) - empty).abs() < 1e-12);
    }

    #[test]
    fn a_matching_window_has_no_drift_and_a_shifted_one_does() {
        let mut w = DriftWindow::new(&reference(), 4);
        assert!(w.psi().is_empty());
        for v in [5.0, 15.0, 15.0, 25.0] {
            w.observe(&vector(v));
        }
        assert_eq!(w.psi(), vec![("amount_minor", 0.0)]);
        // Four more, all in the top bucket: the first four are pushed out one by one.
        for _ in 0..4 {
            w.observe(&vector(99.0));
        }
        assert_eq!(w.len(), 4);
        let all_top = psi(&[0.25, 0.5, 0.25], &[0.0, 0.0, 1.0]);
        assert!((w.psi()[0].1 - all_top).abs() < 1e-12);
        assert!(all_top > 0.25);
        // And back: the window forgets the shift as fast as it saw it.
        for v in [5.0, 15.0, 15.0, 25.0] {
            w.observe(&vector(v));
        }
        assert_eq!(w.psi()[0].1, 0.0);
    }

    #[test]
    fn vectors_of_another_length_are_ignored() {
        let mut w = DriftWindow::new(&reference(), 4);
        w.observe(&[1.0, 2.0]);
        assert!(w.is_empty());
    }
}
