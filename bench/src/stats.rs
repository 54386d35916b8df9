//! Medians with their range over a comparison's rounds.

use serde::{Deserialize, Serialize};

/// The median of some values with their minimum and maximum.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many values.
    pub n: usize,
}

impl Spread {
    /// `None` when there are no (finite) values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len().is_multiple_of(2) { (v[mid - 1] + v[mid]) / 2.0 } else { v[mid] };
        Some(Spread { median, min: v[0], max: v[v.len() - 1], n: v.len() })
    }

    /// `median (min–max)` with `decimals` digits after the point.
    pub fn show(&self, decimals: usize) -> String {
        format!("{} ({}–{})", number(self.median, decimals), number(self.min, decimals), number(self.max, decimals))
    }
}

/// `x` with `decimals` digits after the point and thousands separated by
/// commas when it has no decimals (31,250).
pub fn number(x: f64, decimals: usize) -> String {
    if decimals > 0 {
        return format!("{x:.decimals$}");
    }
    let rounded = x.round();
    let digits = format!("{}", rounded.abs() as u64);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if rounded < 0.0 {
        format!("-{out}")
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, 1.0, 2.0, 10.0]).unwrap();
        assert_eq!(s.median, 3.0);
        assert!(Spread::of(&[]).is_none());
        assert!(Spread::of(&[f64::NAN]).is_none());
    }

    #[test]
    fn numbers_read_well() {
        assert_eq!(number(31_250.4, 0), "31,250");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(number(-1_000.0, 0), "-1,000");
        assert_eq!(number(0.9512, 2), "0.95");
        assert_eq!(Spread::of(&[1.0, 2.0, 3.0]).unwrap().show(1), "2.0 (1.0–3.0)");
    }
}
