//! Kubelet's rules for matching an image against a registry key (a pull
//! secret's `auths` key, a credential provider's `matchImages` entry or a
//! key of its response): the host is split into dot-separated labels, each
//! matched as a shell glob (`*` never spans a dot), with the same number of
//! labels on both sides; the port must be equal (both absent counts); the
//! key's path must be a prefix of the image's path.

/// An image reference or key, split the way kubelet splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub labels: Vec<String>,
    pub port: String,
    /// Everything from the first `/` on (may be empty).
    pub path: String,
}

/// Splits `host[:port][/path]` (no scheme).
pub fn parse(reference: &str) -> Location {
    let (host, path) = match reference.find('/') {
        Some(i) => (&reference[..i], &reference[i..]),
        None => (reference, ""),
    };
    let (name, port) = split_host_port(host);
    Location {
        labels: name.split('.').map(str::to_string).collect(),
        port: port.to_string(),
        path: path.to_string(),
    }
}

/// `host:port` → (host, port); `[v6]:port` → (v6, port); otherwise the
/// whole string and no port.
fn split_host_port(host: &str) -> (&str, &str) {
    if let Some(rest) = host.strip_prefix('[') {
        if let Some((addr, after)) = rest.split_once(']')
            && let Some(port) = after.strip_prefix(':')
        {
            return (addr, port);
        }
        return (host, "");
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => (name, port),
        _ => (host, ""),
    }
}

/// Whether `key` (which may hold globs in its host labels) matches
/// `image`.
pub fn matches(key: &str, image: &str) -> bool {
    let (k, i) = (parse(key), parse(image));
    if k.port != i.port || k.labels.len() != i.labels.len() || !i.path.starts_with(&k.path) {
        return false;
    }
    k.labels
        .iter()
        .zip(&i.labels)
        .all(|(pattern, label)| glob(pattern, label).unwrap_or(false))
}

/// A malformed glob pattern (it then matches nothing, as in kubelet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed glob pattern")]
pub struct BadPattern;

/// Shell-style matching of one label: `*` any run of characters, `?` one
/// character, `[a-z]` / `[^a-z]` classes, `\x` a literal `x`.
pub fn glob(pattern: &str, text: &str) -> Result<bool, BadPattern> {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    glob_at(&p, &t)
}

fn glob_at(p: &[char], t: &[char]) -> Result<bool, BadPattern> {
    match p.first() {
        None => Ok(t.is_empty()),
        Some('*') => {
            // Validate the rest once even if nothing is left to match.
            let rest = &p[1..];
            for skip in 0..=t.len() {
                if glob_at(rest, &t[skip..])? {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        Some('?') => match t.split_first() {
            Some((_, tail)) => glob_at(&p[1..], tail),
            None => {
                check(&p[1..])?;
                Ok(false)
            }
        },
        Some('[') => {
            let (matched_len, close) = class(&p[1..], t.first().copied())?;
            match (matched_len, t.split_first()) {
                (true, Some((_, tail))) => glob_at(&p[close + 2..], tail),
                _ => {
                    check(&p[close + 2..])?;
                    Ok(false)
                }
            }
        }
        Some('\\') => {
            let lit = *p.get(1).ok_or(BadPattern)?;
            match t.split_first() {
                Some((c, tail)) if *c == lit => glob_at(&p[2..], tail),
                _ => {
                    check(&p[2..])?;
                    Ok(false)
                }
            }
        }
        Some(c) => match t.split_first() {
            Some((tc, tail)) if tc == c => glob_at(&p[1..], tail),
            _ => {
                check(&p[1..])?;
                Ok(false)
            }
        },
    }
}

/// Parses a class body (after `[`); returns whether `c` is in it and the
/// index of the closing `]` in `body`.
fn class(body: &[char], c: Option<char>) -> Result<(bool, usize), BadPattern> {
    let mut i = 0;
    let negate = body.first() == Some(&'^');
    if negate {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    loop {
        let ch = *body.get(i).ok_or(BadPattern)?;
        if ch == ']' && !first {
            break;
        }
        first = false;
        // As in Go's filepath.Match: an unescaped `]` or `-` cannot start a
        // range.
        if ch == ']' || ch == '-' {
            return Err(BadPattern);
        }
        let lo = if ch == '\\' {
            i += 1;
            *body.get(i).ok_or(BadPattern)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if body.get(i) == Some(&'-') && body.get(i + 1).is_some_and(|n| *n != ']') {
            i += 1;
            if body[i] == '-' {
                return Err(BadPattern);
            }
            hi = if body[i] == '\\' {
                i += 1;
                *body.get(i).ok_or(BadPattern)?
            } else {
                body[i]
            };
            i += 1;
            if hi < lo {
                return Err(BadPattern);
            }
        }
        if c.is_some_and(|c| lo <= c && c <= hi) {
            hit = true;
        }
    }
    Ok((c.is_some() && (hit != negate), i))
}

/// Checks that the rest of a pattern is well formed.
fn check(p: &[char]) -> Result<(), BadPattern> {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' => {
                p.get(i + 1).ok_or(BadPattern)?;
                i += 2;
            }
            '[' => {
                let (_, close) = class(&p[i + 1..], None)?;
                i += close + 2;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            ("*.docker.io", "blah.docker.io/library/busybox", true),
            ("*.docker.io", "not.right.io/x", false),
            ("*.docker.io", "docker.io/x", false),
            ("*.docker.io", "a.b.docker.io/x", false),
            ("docker.io", "docker.io/library/busybox:1", true),
            (
                "*.dkr.ecr.*.amazonaws.com",
                "123.dkr.ecr.us-east-1.amazonaws.com/app:v1",
                true,
            ),
            (
                "*.dkr.ecr.*.amazonaws.com",
                "123.dkr.ecr.us-east-1.amazonaws.com.cn/app",
                false,
            ),
            ("127.0.0.1:5000", "127.0.0.1:5000/private/busybox:1", true),
            ("127.0.0.1:5000", "127.0.0.1/private/busybox:1", false),
            ("127.0.0.1", "127.0.0.1:5000/private/busybox:1", false),
            ("127.0.0.1:*", "127.0.0.1:5000/x", false),
            ("registry.io/team", "registry.io/team/app:1", true),
            ("registry.io/team", "registry.io/other/app:1", false),
            ("registry.io/team", "registry.io/teamwork/app", true),
            ("reg?stry.io", "registry.io/a", true),
            ("reg[a-z]stry.io", "registry.io/a", true),
            ("reg[^a-z]stry.io", "registry.io/a", false),
            ("*", "localhost/a", true),
            ("*", "registry.io/a", false),
            ("[", "registry.io/a", false),
            ("[::1]:5000", "[::1]:5000/x", true),
        ];
        for (key, image, want) in cases {
            assert_eq!(matches(key, image), *want, "{key} vs {image}");
        }
    }

    #[test]
    fn globs() {
        assert_eq!(glob("a*b", "axxb"), Ok(true));
        assert_eq!(glob("a\\*b", "a*b"), Ok(true));
        assert_eq!(glob("a\\*b", "axb"), Ok(false));
        assert_eq!(glob("[a-", "a"), Err(BadPattern));
        assert_eq!(
            glob("x[", "y"),
            Err(BadPattern),
            "malformed even when the prefix fails"
        );
        assert_eq!(glob("[]]", "]"), Err(BadPattern), "as Go's filepath.Match");
        assert_eq!(glob("[\\]]", "]"), Ok(true));
    }
}
