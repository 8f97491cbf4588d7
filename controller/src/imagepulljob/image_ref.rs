//! Image references the way NodeImage keys them: the *familiar* name
//! (`nginx` for `docker.io/library/nginx`, `team/app` for
//! `docker.io/team/app`, other registries in full) and the tag (`latest`
//! when none is given; a digest stands in for the tag).

/// `(familiar name, tag or digest)` of `image`.
pub fn familiar_name_and_tag(image: &str) -> Result<(String, String), String> {
    if image.is_empty() || image.chars().any(|c| c.is_whitespace()) {
        return Err("empty or contains whitespace".into());
    }
    let (rest, digest) = match image.split_once('@') {
        Some((r, d)) => {
            let ok = d.split_once(':').is_some_and(|(alg, hex)| {
                !alg.is_empty() && hex.len() >= 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
            });
            if !ok {
                return Err(format!("bad digest {d:?}"));
            }
            (r, Some(d.to_string()))
        }
        None => (image, None),
    };
    // A tag is after the last ':' of the last path component.
    let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        let valid = !t.is_empty()
            && t.len() <= 128
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
            && !t.starts_with(['.', '-']);
        if !valid {
            return Err(format!("bad tag {t:?}"));
        }
    }
    let (domain, path) = match name.split_once('/') {
        Some((d, p)) if d.contains('.') || d.contains(':') || d == "localhost" => (d, p),
        _ => ("docker.io", name),
    };
    if path.is_empty()
        || path.split('/').any(|c| {
            c.is_empty()
                || !c
                    .chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
        })
    {
        return Err(format!("bad repository name {path:?}"));
    }
    let familiar = if domain == "docker.io" || domain == "index.docker.io" {
        match path.strip_prefix("library/") {
            Some(p) if !p.contains('/') => p.to_string(),
            _ => path.to_string(),
        }
    } else {
        format!("{domain}/{path}")
    };
    let tag = digest.unwrap_or_else(|| tag.unwrap_or("latest").to_string());
    Ok((familiar, tag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_nodeimage_keys() {
        let digest = format!("sha256:{}", "a".repeat(64));
        for (image, name, tag) in [
            ("nginx", "nginx", "latest"),
            ("nginx:1.9.1", "nginx", "1.9.1"),
            ("docker.io/library/nginx:1.9.1", "nginx", "1.9.1"),
            ("library/nginx", "nginx", "latest"),
            ("docker.io/team/app:v2", "team/app", "v2"),
            (
                "127.0.0.1:5000/team/app:v2",
                "127.0.0.1:5000/team/app",
                "v2",
            ),
            (
                "localhost/keelson/busybox:test",
                "localhost/keelson/busybox",
                "test",
            ),
            (
                "registry.example.com:443/a/b/c",
                "registry.example.com:443/a/b/c",
                "latest",
            ),
        ] {
            assert_eq!(
                familiar_name_and_tag(image).unwrap(),
                (name.to_string(), tag.to_string()),
                "{image}"
            );
        }
        assert_eq!(
            familiar_name_and_tag(&format!("nginx@{digest}")).unwrap(),
            ("nginx".to_string(), digest.clone())
        );
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx: 1",
            "a//b",
            "nginx@sha256:xyz",
            "nginx:-x",
        ] {
            assert!(familiar_name_and_tag(bad).is_err(), "{bad:?}");
        }
    }
}
