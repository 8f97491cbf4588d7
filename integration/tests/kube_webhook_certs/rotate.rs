//! A self-made certificate near the end of its life (a third or less
//! left) is rotated by the controller: exactly one replica writes new ones
//! to the Secret (a conditional write), both serve them, with no admission
//! failing in between.

use std::time::Duration;

use super::*;

/// How many times the replicas logged a rotation so far.
fn rotations(c: &Cluster) -> usize {
    let pods = c
        .get_json(&[
            "-n",
            NS,
            "pods",
            "-l",
            "app.kubernetes.io/name=keelson-controller",
        ])
        .unwrap();
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default();
            c.kubectl(&["-n", NS, "logs", name])
                .unwrap_or_default()
                .matches("webhook certificates rotated")
                .count()
        })
        .sum()
}

#[test]
fn a_certificate_near_its_end_is_rotated_once_with_no_failed_admission() {
    let _turn = turn();
    let c = cluster();
    let ns = c.namespace("certs-rotate").unwrap();
    let before = rotations(&c);
    let admissions = Admissions::start(&c, &ns.name, 2);
    // Two and a half hours of life, two gone: due.
    let short = make(Duration::from_secs(2 * 3600), Duration::from_secs(150 * 60));
    write_secret(&c, &short);
    let fresh = c
        .wait_for(
            "the Secret's certificate rotated",
            Duration::from_secs(60),
            |c| {
                let cert = secret_text(c, "cert.pem");
                Ok((first_pem(&cert) != first_pem(&short.cert)).then_some(cert))
            },
        )
        .unwrap();
    let ca = secret_text(&c, "ca-cert.pem");
    assert_ne!(first_pem(&ca), first_pem(&short.ca_cert), "a new CA too");
    // Valid for most of a year (openssl: not expiring within 300 days).
    let file = c.dir().join("rotated.pem");
    std::fs::write(&file, &fresh).unwrap();
    let checked = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkend",
            &(300 * 24 * 3600).to_string(),
            "-in",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(checked.success(), "the rotated certificate lives long");
    wait_served(&c, &fresh, &ca, Duration::from_secs(90));
    for b in bundles(&c) {
        assert!(holds(&b, &ca), "the rotated CA is in every bundle");
    }
    assert!(admitted_during(&admissions, Duration::from_secs(10)) > 0);
    let (ok, failed) = admissions.stop();
    assert!(
        failed.is_empty(),
        "{} failed (of {} admissions and the handshakes), e.g.:\n  {}\n{}",
        failed.len(),
        ok + failed.len(),
        summary(&failed),
        certificate_logs(&c)
    );
    assert_eq!(rotations(&c) - before, 1, "one replica rotated, once");
}
