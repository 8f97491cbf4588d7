//! Kubernetes resource quantities (`1Gi`, `500M`, `1.5e3`, `100m`) as
//! comparable numbers, for comparing claim sizes with their templates
//! (apimachinery's `resource.Quantity` grammar: a signed decimal, then a
//! binary suffix `Ki`…`Ei`, a decimal suffix `n u m k M G T P E`, or an
//! exponent `e`/`E`).

/// The quantity in billionths of a unit (`None` when it does not parse
/// or does not fit).
pub fn nanos(q: &str) -> Option<i128> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let (negative, digits) = match number.as_bytes().first() {
        Some(b'-') => (true, &number[1..]),
        Some(b'+') => (false, &number[1..]),
        _ => (false, number),
    };
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // mantissa × 10^exp10 × 2^exp2
    let mantissa: i128 = format!("{int}{frac}").parse().ok()?;
    let mut exp10: i32 = -(frac.len() as i32);
    let mut exp2: u32 = 0;
    match suffix {
        "" => {}
        "Ki" => exp2 = 10,
        "Mi" => exp2 = 20,
        "Gi" => exp2 = 30,
        "Ti" => exp2 = 40,
        "Pi" => exp2 = 50,
        "Ei" => exp2 = 60,
        "n" => exp10 -= 9,
        "u" => exp10 -= 6,
        "m" => exp10 -= 3,
        "k" => exp10 += 3,
        "M" => exp10 += 6,
        "G" => exp10 += 9,
        "T" => exp10 += 12,
        "P" => exp10 += 15,
        "E" => exp10 += 18,
        s if s.starts_with(['e', 'E']) => exp10 += s[1..].parse::<i32>().ok()?,
        _ => return None,
    }
    let mut v = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let scale = exp10 + 9;
    if scale >= 0 {
        v = v.checked_mul(10i128.checked_pow(scale as u32)?)?;
    } else {
        // Finer than a billionth: rounded up, as apimachinery does.
        let d = 10i128.checked_pow(scale.unsigned_abs())?;
        v = (v + d - 1) / d;
    }
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_and_forms() {
        assert_eq!(nanos("1Gi"), Some((1i128 << 30) * 1_000_000_000));
        assert_eq!(nanos("1G"), Some(1_000_000_000 * 1_000_000_000));
        assert_eq!(nanos("1.5Ki"), Some(1536 * 1_000_000_000));
        assert_eq!(nanos("100m"), Some(100_000_000));
        assert_eq!(nanos("1e3"), nanos("1k"));
        assert_eq!(nanos("-2"), Some(-2_000_000_000));
        assert!(nanos("1Gi") > nanos("1000Mi"));
        assert!(nanos("1Gi") == nanos("1024Mi"));
        assert_eq!(nanos("abc"), None);
        assert_eq!(nanos("1Xi"), None);
        assert_eq!(nanos(""), None);
    }
}
