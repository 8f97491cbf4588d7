//! A certificate with a new CA written into the Secret (as an operator, or
//! cert-manager writing the same keys, would) is served by every replica,
//! the bundle carrying the new CA beside the old one, with no admission
//! failing in between.

use std::time::{Duration, Instant};

use super::*;

#[test]
fn a_certificate_replaced_in_the_secret_is_served_with_no_failed_admission() {
    let _turn = turn();
    let c = cluster();
    let ns = c.namespace("certs-replace").unwrap();
    let (old_cert, old_ca) = (secret_text(&c, "cert.pem"), secret_text(&c, "ca-cert.pem"));
    wait_served(&c, &old_cert, &old_ca, Duration::from_secs(120));
    let admissions = Admissions::start(&c, &ns.name, 2);
    assert!(
        admitted_during(&admissions, Duration::from_secs(5)) > 0,
        "admissions go through the webhook before the change"
    );

    let new = make(
        Duration::from_secs(3600),
        Duration::from_secs(365 * 24 * 3600),
    );
    write_secret(&c, &new);
    let written = Instant::now();
    wait_served(&c, &new.cert, &new.ca_cert, Duration::from_secs(90));
    eprintln!(
        "new certificate served by both replicas {:?} after the write",
        written.elapsed()
    );
    // Nothing failed while switching (checked before the bundle, whose
    // state a wrong order would also give away).
    admitted_during(&admissions, Duration::from_secs(10));
    let failed = admissions.failures();
    assert!(
        failed.is_empty(),
        "{} failed while switching, e.g.:\n  {}\n{}",
        failed.len(),
        summary(&failed),
        certificate_logs(&c)
    );
    for b in bundles(&c) {
        assert!(holds(&b, &new.ca_cert), "the new CA is in every bundle");
        assert!(
            holds(&b, &old_ca),
            "the old CA stays while a replica may still serve it"
        );
    }
    // Settled: the replicas agree on the bundle and leave it alone (over
    // more than one of their periodic re-injection rounds).
    let versions = || {
        [
            "mutatingwebhookconfiguration/keelson-mutating-webhook-configuration",
            "validatingwebhookconfiguration/keelson-validating-webhook-configuration",
        ]
        .map(|k| c.get_json(&[k]).unwrap()["metadata"]["resourceVersion"].clone())
    };
    let settled = versions();
    let after = admitted_during(&admissions, Duration::from_secs(65));
    assert_eq!(versions(), settled, "nobody rewrote the settled bundle");
    let (ok, failed) = admissions.stop();
    assert!(
        failed.is_empty(),
        "{} failed (of {} admissions and the handshakes), e.g.:\n  {}\n{}",
        failed.len(),
        ok + failed.len(),
        summary(&failed),
        certificate_logs(&c)
    );
    assert!(after > 0, "admissions go through with the new certificate");
}
