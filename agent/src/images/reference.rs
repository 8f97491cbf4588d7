//! Validation of image references (`[host[:port]/]path[:tag][@digest]`),
//! so a malformed one is refused before anything is queued.

/// Why a reference is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid image reference {reference:?}: {why}")]
pub struct BadReference {
    pub reference: String,
    pub why: &'static str,
}

/// Checks `reference` against the distribution reference grammar.
pub fn validate(reference: &str) -> Result<(), BadReference> {
    let bad = |why| {
        Err(BadReference {
            reference: reference.to_string(),
            why,
        })
    };
    if reference.is_empty() || reference.len() > 4096 {
        return bad("empty or too long");
    }
    let (name_tag, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return bad("digest must be algorithm:hex");
        };
        let alg_ok = !alg.is_empty()
            && alg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
        if !alg_ok || hex.len() < 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return bad("malformed digest");
        }
    }
    // A tag is after the last ':' that follows the last '/'.
    let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match name_tag[last_slash..].rfind(':') {
        Some(i) => (
            &name_tag[..last_slash + i],
            Some(&name_tag[last_slash + i + 1..]),
        ),
        None => (name_tag, None),
    };
    if let Some(t) = tag {
        let first_ok = t
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok
            || t.len() > 128
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return bad("malformed tag");
        }
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    let first = parts[0];
    let has_host =
        parts.len() > 1 && (first.contains('.') || first.contains(':') || first == "localhost");
    if has_host {
        let (host, port) = match first.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (first, None),
        };
        if host.is_empty()
            || !host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        {
            return bad("malformed registry host");
        }
        if port.is_some_and(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_digit())) {
            return bad("malformed registry port");
        }
        parts.remove(0);
    }
    if parts.is_empty() {
        return bad("missing repository");
    }
    for p in parts {
        if !path_component(p) {
            return bad(
                "repository path must be lowercase letters, digits and single . _ __ or - separators",
            );
        }
    }
    Ok(())
}

fn path_component(p: &str) -> bool {
    if p.is_empty() {
        return false;
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let chars: Vec<char> = p.chars().collect();
    if !alnum(chars[0]) || !alnum(chars[chars.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if alnum(c) {
            i += 1;
            continue;
        }
        // separators: '.', '_', '__', or one or more '-'
        match c {
            '.' => i += 1,
            '_' => i += if chars.get(i + 1) == Some(&'_') { 2 } else { 1 },
            '-' => {
                while chars.get(i) == Some(&'-') {
                    i += 1;
                }
            }
            _ => return false,
        }
        if !chars.get(i).is_some_and(|c| alnum(*c)) {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        for ok in [
            "busybox",
            "library/busybox:1.36",
            "docker.io/library/busybox:latest",
            "127.0.0.1:5000/private/busybox:1",
            "localhost/keelson/busybox:test",
            "reg.io/a__b/c--d/e.f:v1.0-rc_1",
            "reg.io/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "Busybox",
            "reg.io/app:",
            "reg.io/app:-x",
            "reg.io//app",
            "reg.io/app@sha256:xyz",
            "reg.io:port/app",
            "reg.io/app_/x",
            "a b",
            "reg.io/",
        ] {
            assert!(validate(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
