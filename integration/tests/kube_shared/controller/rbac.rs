//! What each ServiceAccount may do, by the real authorizer, against the
//! checked-in expectation in `deploy/rbac/expected/`.

use super::*;

/// One permission the authorizer grants: (resource or non-resource URL,
/// resource name or "", verb).
type Grant = (String, String, String);

/// The grants in `kubectl auth can-i --list` output: one row per rule,
/// `Resources  [Non-Resource URLs]  [Resource Names]  [Verbs]`, the first
/// column empty for non-resource URLs.
fn grants_of_can_i(out: &str) -> std::collections::BTreeSet<Grant> {
    let mut set = std::collections::BTreeSet::new();
    for line in out.lines().skip(1).filter(|l| !l.trim().is_empty()) {
        let resource = if line.starts_with(char::is_whitespace) {
            ""
        } else {
            line.split_whitespace().next().unwrap_or("")
        };
        let rest = &line[resource.len()..];
        let groups: Vec<Vec<&str>> = rest
            .split('[')
            .skip(1)
            .map(|g| {
                g.split(']')
                    .next()
                    .unwrap_or("")
                    .split_whitespace()
                    .collect()
            })
            .collect();
        let [urls, names, verbs] = groups.as_slice() else {
            panic!("unexpected `auth can-i --list` row: {line:?}");
        };
        let subjects: Vec<&str> = if resource.is_empty() {
            urls.clone()
        } else {
            vec![resource]
        };
        let names = if names.is_empty() {
            vec![""]
        } else {
            names.clone()
        };
        for s in &subjects {
            for n in &names {
                for v in verbs {
                    set.insert((s.to_string(), n.to_string(), v.to_string()));
                }
            }
        }
    }
    set
}

/// The grants of an expectation section: `resource[name]: verb verb…`
/// per line (`[name]` absent when not narrowed by name), `#` comments.
fn grants_of_expectation(text: &str) -> std::collections::BTreeSet<Grant> {
    let mut set = std::collections::BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (subject, verbs) = line
            .rsplit_once(": ")
            .unwrap_or_else(|| panic!("expectation line without `: verbs`: {line:?}"));
        let (resource, name) = match subject.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((r, n)) => (r, n),
            None => (subject, ""),
        };
        for v in verbs.split_whitespace() {
            set.insert((resource.to_string(), name.to_string(), v.to_string()));
        }
    }
    set
}

/// `grants` in the expectation format, one line per resource and name.
fn expectation_lines(grants: &std::collections::BTreeSet<Grant>) -> String {
    let mut by: std::collections::BTreeMap<(&str, &str), Vec<&str>> = Default::default();
    for (r, n, v) in grants {
        by.entry((r, n)).or_default().push(v);
    }
    by.into_iter()
        .map(|((r, n), vs)| {
            let name = if n.is_empty() {
                String::new()
            } else {
                format!("[{n}]")
            };
            format!("{r}{name}: {}\n", vs.join(" "))
        })
        .collect()
}

/// The sections of an expectation file: `[cluster]` (what the ServiceAccount
/// may do in a namespace where no Role binds it) and `[<namespace>]` (what
/// a Role adds there).
fn expectation_sections(text: &str) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> = Default::default();
    let mut current = None;
    for line in text.lines() {
        if let Some(s) = line
            .trim()
            .strip_prefix('[')
            .and_then(|l| l.strip_suffix(']'))
        {
            current = Some(s.to_string());
            out.entry(s.to_string()).or_default();
        } else if let Some(s) = &current {
            let body = out.get_mut(s).unwrap();
            body.push_str(line);
            body.push('\n');
        }
    }
    out
}

type Grants = std::collections::BTreeSet<Grant>;

/// The namespaces the expectation files have a section for, besides
/// `[cluster]` (checked in `default`, where no Role of ours binds).
const RBAC_NAMESPACES: [&str; 2] = ["keelson-system", "kruise-daemon-config"];

/// The expectation of `sa` from deploy/rbac/expected/: `<sa>.txt` plus
/// `<sa>.<dir>.txt` of each optional role in `optional`, by section.
fn rbac_expectation(sa: &str, optional: &[&str]) -> std::collections::BTreeMap<String, Grants> {
    let dir = kube::install::deploy_dir().join("rbac").join("expected");
    let mut files = vec![dir.join(format!("{sa}.txt"))];
    files.extend(
        optional
            .iter()
            .map(|d| dir.join(format!("{sa}.{d}.txt")))
            .filter(|f| f.exists()),
    );
    let mut expected: std::collections::BTreeMap<String, Grants> = Default::default();
    for f in files {
        let text =
            std::fs::read_to_string(&f).unwrap_or_else(|e| panic!("reading {}: {e}", f.display()));
        for (section, body) in expectation_sections(&text) {
            expected
                .entry(section)
                .or_default()
                .extend(grants_of_expectation(&body));
        }
    }
    let unknown: Vec<_> = expected
        .keys()
        .filter(|s| *s != "cluster" && !RBAC_NAMESPACES.contains(&s.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "{sa}: sections never checked: {unknown:?}"
    );
    expected
}

/// What the real authorizer lets `sa` do in `ns`.
fn can_i_list(c: &Cluster, sa: &str, ns: &str) -> Grants {
    grants_of_can_i(
        &c.kubectl(&[
            "auth",
            "can-i",
            "--list",
            "-n",
            ns,
            &format!("--as=system:serviceaccount:keelson-system:{sa}"),
        ])
        .unwrap(),
    )
}

/// Compares what `sa` may do with `expected`; the differences as text
/// (empty when none). In a namespace section, the expectation is
/// `[cluster]` plus that section; a difference already reported for
/// `[cluster]` is not repeated. Writes the authorizer's answer, in the
/// expectation format, to a temp file named in the output.
fn rbac_differences(
    c: &Cluster,
    sa: &str,
    expected: &std::collections::BTreeMap<String, Grants>,
    label: &str,
) -> String {
    let cluster_want = expected.get("cluster").cloned().unwrap_or_default();
    let cluster_got = can_i_list(c, sa, "default");
    let mut report = String::new();
    let mut answer = format!("[cluster]\n{}", expectation_lines(&cluster_got));
    let mut diff = |section: &str, want: &Grants, got: &Grants, skip: &Grants| {
        let extra: Grants = got
            .difference(want)
            .filter(|g| !skip.contains(*g))
            .cloned()
            .collect();
        let missing: Grants = want
            .difference(got)
            .filter(|g| !skip.contains(*g))
            .cloned()
            .collect();
        if extra.is_empty() && missing.is_empty() {
            return;
        }
        report.push_str(&format!("{sa} ({label}) in [{section}]:\n"));
        for l in expectation_lines(&extra).lines() {
            report.push_str(&format!("  + {l}   (granted, not expected)\n"));
        }
        for l in expectation_lines(&missing).lines() {
            report.push_str(&format!("  - {l}   (expected, not granted)\n"));
        }
    };
    diff("cluster", &cluster_want, &cluster_got, &Grants::new());
    let reported: Grants = cluster_got
        .symmetric_difference(&cluster_want)
        .cloned()
        .collect();
    for ns in RBAC_NAMESPACES {
        let mut want = cluster_want.clone();
        want.extend(expected.get(ns).cloned().unwrap_or_default());
        let got = can_i_list(c, sa, ns);
        answer.push_str(&format!(
            "\n[{ns}]\n{}",
            expectation_lines(&got.difference(&cluster_got).cloned().collect())
        ));
        diff(ns, &want, &got, &reported);
    }
    let out = std::env::temp_dir().join(format!("keelson-rbac-{sa}-{label}.txt"));
    std::fs::write(&out, &answer).unwrap();
    eprintln!("{sa} ({label}): the authorizer's answer: {}", out.display());
    report
}

/// Polls until `done` or 30 s.
fn until(what: &str, mut done: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !done() {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The optional roles the test cluster's gates bind
/// (deploy/rbac/optional/<dir>), re-applied when dropped.
struct OptionalRoles<'a> {
    c: &'a Cluster,
    dirs: Vec<&'static str>,
}

impl OptionalRoles<'_> {
    fn binding(dir: &str) -> String {
        format!("clusterrolebinding/keelson-controller-{dir}")
    }

    fn bound(&self, dir: &str) -> bool {
        self.c
            .kubectl_result(&["get", &Self::binding(dir)], None)
            .unwrap()
            .0
    }

    fn restore(&self) {
        for d in &self.dirs {
            let path = kube::install::deploy_dir().join("rbac/optional").join(d);
            let _ = self
                .c
                .kubectl(&["apply", "-k", &path.display().to_string()]);
        }
    }
}

impl Drop for OptionalRoles<'_> {
    fn drop(&mut self) {
        self.restore();
    }
}

#[test]
fn service_accounts_may_do_exactly_what_deploy_rbac_expected_lists() {
    let c = cluster();
    // What the test cluster's gates add from deploy/rbac/optional/.
    let optional: Vec<&'static str> = kube::install::OPTIONAL_RBAC
        .iter()
        .filter(|(gate, _)| kube::DEFAULT_GATES.contains(&format!("{gate}=true")))
        .map(|(_, d)| *d)
        .collect();
    assert!(
        optional.contains(&"resource-distribution"),
        "the test cluster runs ResourceDistribution: its role is bound"
    );
    let mut report = String::new();
    // The test install: base + the optional roles of its gates.
    for sa in ["keelson-agent", "keelson-controller"] {
        report.push_str(&rbac_differences(
            &c,
            sa,
            &rbac_expectation(sa, &optional),
            "test install",
        ));
    }
    // The base alone (`kubectl apply -k deploy/`): the optional bindings
    // dropped for the while (nothing else in this binary uses them), then
    // put back.
    let roles = OptionalRoles {
        c: &c,
        dirs: optional.clone(),
    };
    for d in &roles.dirs {
        c.kubectl(&["delete", &OptionalRoles::binding(d)]).unwrap();
    }
    until(
        "the optional bindings to be gone from the authorizer",
        || {
            !can_i_list(&c, "keelson-controller", "default")
                .iter()
                .any(|(r, _, _)| r.starts_with("resourcedistributions."))
        },
    );
    let base_expected = rbac_expectation("keelson-controller", &[]);
    report.push_str(&rbac_differences(
        &c,
        "keelson-controller",
        &base_expected,
        "base",
    ));
    roles.restore();
    assert!(roles.dirs.iter().all(|d| roles.bound(d)));
    until("the optional bindings back in the authorizer", || {
        can_i_list(&c, "keelson-controller", "default")
            .iter()
            .any(|(r, _, _)| r.starts_with("resourcedistributions."))
    });
    assert!(
        report.is_empty(),
        "the real authorizer's answer differs from deploy/rbac/expected/ (optional roles of the test cluster: {optional:?}):\n{report}"
    );
    // The base writes Secrets nowhere but kruise-daemon-config and its own
    // certificate Secret (made once in keelson-system).
    let writes = |section: &str| -> Vec<Grant> {
        base_expected
            .get(section)
            .into_iter()
            .flatten()
            .filter(|(r, _, v)| r == "secrets" && !["get", "list", "watch"].contains(&v.as_str()))
            .cloned()
            .collect()
    };
    assert!(writes("cluster").is_empty(), "{:?}", writes("cluster"));
    // Every CRD shipped with a conversion webhook gets its caBundle from
    // the controller: exactly those may it update.
    let controller_crds: std::collections::BTreeSet<String> = base_expected["cluster"]
        .iter()
        .filter(|(r, _, v)| r == "customresourcedefinitions.apiextensions.k8s.io" && v == "update")
        .map(|(_, n, _)| n.clone())
        .collect();
    let mut converted = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(kube::install::deploy_dir().join("crds")).unwrap() {
        let path = e.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        if text.contains("strategy: Webhook") {
            let name = text
                .lines()
                .find_map(|l| l.strip_prefix("  name: "))
                .unwrap_or_else(|| panic!("{}: no metadata.name", path.display()));
            converted.insert(name.trim().to_string());
        }
    }
    assert!(
        !converted.is_empty(),
        "no CRD in deploy/crds has a conversion webhook"
    );
    assert_eq!(
        controller_crds, converted,
        "the controller may update exactly the CRDs whose conversion webhook it injects the CA into"
    );
}
