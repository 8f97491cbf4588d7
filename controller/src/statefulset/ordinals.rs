//! Which ordinals an Advanced StatefulSet's replicas have: from
//! `ordinals.start` (gate `StatefulSetStartOrdinal`, else 0), skipping
//! `reserveOrdinals` (numbers, or inclusive `a-b` ranges), until
//! `replicas` ordinals are covered. Pods at any other ordinal are
//! condemned.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// The reserved ordinals (entries that do not parse are skipped; the
/// validating webhook refuses them).
pub fn reserved(reserve: &[IntOrString]) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for r in reserve {
        match r {
            IntOrString::Int(n) if *n >= 0 => {
                out.insert(*n);
            }
            IntOrString::Int(_) => {}
            IntOrString::String(s) => {
                if let Some((a, b)) = s.split_once('-')
                    && let (Ok(a), Ok(b)) = (a.trim().parse::<i32>(), b.trim().parse::<i32>())
                    && 0 <= a
                    && a <= b
                {
                    out.extend(a..=b);
                } else if let Ok(n) = s.trim().parse::<i32>()
                    && n >= 0
                {
                    out.insert(n);
                }
            }
        }
    }
    out
}

/// The ordinals of `replicas` replicas starting at `start`, ascending.
pub fn wanted(start: i32, replicas: i32, reserved: &BTreeSet<i32>) -> Vec<i32> {
    let mut out = Vec::with_capacity(replicas.max(0) as usize);
    let mut n = start.max(0);
    while (out.len() as i32) < replicas {
        if !reserved.contains(&n) {
            out.push(n);
        }
        n += 1;
    }
    out
}

/// The ordinal in pod name `<set>-<n>`.
pub fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    if rest.is_empty()
        || !rest.bytes().all(|b| b.is_ascii_digit())
        || (rest.len() > 1 && rest.starts_with('0'))
    {
        return None;
    }
    rest.parse().ok()
}

/// The pod name of ordinal `n`.
pub fn pod_name(set: &str, n: i32) -> String {
    format!("{set}-{n}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_and_reserved_ordinals() {
        let none = BTreeSet::new();
        assert_eq!(
            wanted(3, 5, &none),
            vec![3, 4, 5, 6, 7],
            "the seed's example"
        );
        assert_eq!(wanted(0, 3, &BTreeSet::from([1])), vec![0, 2, 3]);
        let r = reserved(&[
            IntOrString::Int(1),
            IntOrString::String("4-6".into()),
            IntOrString::String("9".into()),
            IntOrString::String("8-2".into()),
            IntOrString::Int(-1),
        ]);
        assert_eq!(r, BTreeSet::from([1, 4, 5, 6, 9]));
        assert_eq!(wanted(0, 6, &r), vec![0, 2, 3, 7, 8, 10]);
        assert_eq!(wanted(0, 0, &r), Vec::<i32>::new());
    }

    #[test]
    fn ordinals_from_names() {
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-01"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-"), None);
        assert_eq!(ordinal_of("web-a", "web-a-3"), Some(3));
        assert_eq!(pod_name("web", 7), "web-7");
    }
}
