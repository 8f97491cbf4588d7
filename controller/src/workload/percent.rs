//! OpenKruise's int-or-percent arithmetic: integers pass through; strings
//! must end in `%` and may be fractional (`12.5%`); the result is
//! `value × total / 100` rounded up or down.

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Why an int-or-percent value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PercentError {
    #[error("invalid type: string is not a percentage")]
    NotPercent,
    #[error("invalid value for IntOrString: invalid value {0:?}")]
    Number(String),
}

/// `v` scaled against `total`.
pub fn scaled(v: &IntOrString, total: i32, round_up: bool) -> Result<i32, PercentError> {
    match v {
        IntOrString::Int(i) => Ok(*i),
        IntOrString::String(s) => {
            let n = s.strip_suffix('%').ok_or(PercentError::NotPercent)?;
            let p: f64 = n
                .trim()
                .parse()
                .map_err(|_| PercentError::Number(s.clone()))?;
            if !p.is_finite() {
                return Err(PercentError::Number(s.clone()));
            }
            let x = p * f64::from(total) / 100.0;
            let r = if round_up { x.ceil() } else { x.floor() };
            // Bounded by the percentage and total, both small.
            Ok(r.clamp(f64::from(i32::MIN), f64::from(i32::MAX)) as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_pass_percents_round() {
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(scaled(&IntOrString::Int(3), 10, true), Ok(3));
        assert_eq!(scaled(&s("20%"), 7, true), Ok(2));
        assert_eq!(scaled(&s("20%"), 7, false), Ok(1));
        assert_eq!(scaled(&s("12.5%"), 8, false), Ok(1));
        assert_eq!(scaled(&s("100%"), 5, false), Ok(5));
        assert_eq!(scaled(&s("5"), 5, false), Err(PercentError::NotPercent));
        assert!(matches!(
            scaled(&s("x%"), 5, false),
            Err(PercentError::Number(_))
        ));
    }
}
