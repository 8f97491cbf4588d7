//! The webhook's certificates change under a running cluster without a
//! single failed admission: while loops keep sending ImagePullJobs through
//! the shipped mutating and validating webhooks (`kubectl create
//! --dry-run=server`, failurePolicy Fail), the certificate Secret is
//! replaced by one with a new CA ([`replace`]), or given a certificate
//! near its end that the controller must rotate ([`rotate`]). Afterwards
//! every controller replica serves the Secret's certificate (read off its
//! pod IP with `openssl s_client`, verified against the Secret's CA), the
//! webhook configurations' caBundle carries the new CA, and no admission
//! failed in between.
//!
//! One test binary, one cluster; the tests take turns on the one Secret.

mod replace;
mod rotate;

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use keelson_integration::kube::{self, Cluster, live_and_ready};
use serde_json::{Value, json};

const NS: &str = "keelson-system";
const SECRET: &str = "keelson-webhook-certs";
const HOST: &str = "keelson-webhook.keelson-system.svc";

fn cluster() -> Arc<Cluster> {
    kube::shared().expect("test cluster")
}

/// One test at a time on the Secret.
fn turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// PEM of a CA and a serving certificate for the webhook Service, valid
/// from `from` (seconds before now) for `life`.
struct Made {
    ca_cert: String,
    ca_key: String,
    cert: String,
    key: String,
}

fn make(from: Duration, life: Duration) -> Made {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap();
    let start = rcgen::date_time_ymd(1970, 1, 1) + now - from;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // A name of its own (see the controller's: verifiers pick an issuer
    // by subject first).
    ca.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test-replacement-ca@{}", now.as_millis()),
    );
    ca.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    ca.not_before = start;
    ca.not_after = start + life;
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, &ca_key);
    let names: Vec<String> = ["keelson-webhook", "keelson-webhook.keelson-system", HOST]
        .map(String::from)
        .to_vec();
    let mut leaf = rcgen::CertificateParams::new(names).unwrap();
    leaf.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = start;
    leaf.not_after = start + life;
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    Made {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    }
}

/// Replaces the Secret's data with `m` (OpenKruise's keys, as the
/// controller writes them), unconditionally, as an operator would.
fn write_secret(c: &Cluster, m: &Made) {
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": SECRET, "namespace": NS},
        "data": {
            "ca-cert.pem": b(&m.ca_cert), "ca-key.pem": b(&m.ca_key),
            "cert.pem": b(&m.cert), "key.pem": b(&m.key),
            "tls.crt": b(&m.cert), "tls.key": b(&m.key),
        }
    });
    let (ok, out, err) = c
        .kubectl_result(&["replace", "-f", "-"], Some(&secret.to_string()))
        .unwrap();
    assert!(ok, "replacing the Secret: {err}{out}");
}

/// The Secret's `key`, decoded.
fn secret_text(c: &Cluster, key: &str) -> String {
    let s = c.get_json(&["-n", NS, "secret", SECRET]).unwrap();
    let b64 = s["data"][key].as_str().unwrap_or_default();
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
    )
    .unwrap()
}

/// The first PEM block of `text`, whitespace-normalised.
fn first_pem(text: &str) -> Option<String> {
    let start = text.find("-----BEGIN CERTIFICATE-----")?;
    let end = text[start..].find("-----END CERTIFICATE-----")? + start;
    Some(text[start..end].split_whitespace().collect())
}

/// The IPs of the Ready controller pods.
fn controller_ips(c: &Cluster) -> Vec<String> {
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
        .filter(|p| live_and_ready(p))
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect()
}

/// The certificate served at `ip`:9443, if it verifies against `ca` for
/// the Service's name (`openssl s_client`).
fn served(c: &Cluster, ip: &str, ca: &str) -> Option<String> {
    handshake(c, ip, ca).ok()
}

/// [`served`], or why not (openssl's verdict and the subject served).
fn handshake(c: &Cluster, ip: &str, ca: &str) -> Result<String, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let file = c
        .dir()
        .join(format!("ca-{}.pem", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&file, ca).unwrap();
    let out = Command::new("openssl")
        .args([
            "s_client",
            "-connect",
            &format!("{ip}:9443"),
            "-servername",
            HOST,
        ])
        .args(["-verify_hostname", HOST, "-verify_return_error", "-CAfile"])
        .arg(&file)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&file);
    let stdout = String::from_utf8_lossy(&out.stdout);
    match first_pem(&stdout) {
        Some(cert) if out.status.success() => Ok(cert),
        _ => {
            let why = String::from_utf8_lossy(&out.stderr)
                .lines()
                .chain(stdout.lines())
                .filter(|l| l.contains("verify") || l.contains("error") || l.contains("issuer="))
                .take(4)
                .collect::<Vec<_>>()
                .join(" | ");
            Err(why)
        }
    }
}

/// Waits until every Ready replica (two) serves `cert`, verified by `ca`.
fn wait_served(c: &Cluster, cert: &str, ca: &str, limit: Duration) {
    let want = first_pem(cert).unwrap();
    c.wait_for(
        "every replica serves the Secret's certificate",
        limit,
        |c| {
            let ips = controller_ips(c);
            Ok((ips.len() == 2
                && ips
                    .iter()
                    .all(|ip| served(c, ip, ca).as_deref() == Some(want.as_str())))
            .then_some(()))
        },
    )
    .unwrap();
}

/// The caBundles of every webhook (and conversion) calling the webhook
/// Service, decoded.
fn bundles(c: &Cluster) -> Vec<String> {
    let mut out = vec![];
    let b64 = |v: &Value| {
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().unwrap_or_default())
                .unwrap(),
        )
        .unwrap()
    };
    for kind in [
        "mutatingwebhookconfiguration/keelson-mutating-webhook-configuration",
        "validatingwebhookconfiguration/keelson-validating-webhook-configuration",
    ] {
        let cfg = c.get_json(&[kind]).unwrap();
        for w in cfg["webhooks"].as_array().into_iter().flatten() {
            if w["clientConfig"]["service"]["name"] == "keelson-webhook" {
                out.push(b64(&w["clientConfig"]["caBundle"]));
            }
        }
    }
    let crds = c.get_json(&["crd"]).unwrap();
    for crd in crds["items"].as_array().into_iter().flatten() {
        let cfg = &crd["spec"]["conversion"]["webhook"]["clientConfig"];
        if cfg["service"]["name"] == "keelson-webhook" {
            out.push(b64(&cfg["caBundle"]));
        }
    }
    assert!(!out.is_empty(), "no webhook calls the Service");
    out
}

/// Whether PEM `bundle` holds certificate `pem`.
fn holds(bundle: &str, pem: &str) -> bool {
    let want = first_pem(pem).unwrap();
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .filter_map(first_pem)
        .any(|b| b == want)
}

/// The caBundle of the first webhook of the mutating configuration.
fn published_bundle(c: &Cluster) -> Option<String> {
    let cfg = c
        .get_json(&["mutatingwebhookconfiguration/keelson-mutating-webhook-configuration"])
        .ok()?;
    let b64 = cfg["webhooks"][0]["clientConfig"]["caBundle"].as_str()?;
    String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok()
}

/// Admissions sent by [`Admissions::start`]'s loops until
/// [`Admissions::stop`]: how many succeeded (the mutating webhook's
/// defaults in the answer), and the failures' texts. Beside them a loop
/// of fresh TLS handshakes with every replica, each verified against the
/// caBundle published at that moment: the API server reuses its
/// connections, so this is what catches a replica serving a certificate
/// before the bundle vouches for it.
struct Admissions {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    handshakes: Arc<AtomicUsize>,
    failed: Arc<Mutex<Vec<String>>>,
    loops: Vec<std::thread::JoinHandle<()>>,
}

impl Admissions {
    /// `n` loops of `kubectl create --dry-run=server` of an ImagePullJob
    /// in `ns`.
    fn start(c: &Arc<Cluster>, ns: &str, n: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(Mutex::new(vec![]));
        let mut loops = (0..n)
            .map(|i| {
                let (c, ns) = (c.clone(), ns.to_string());
                let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
                std::thread::spawn(move || {
                    let job =
                        json!({"apiVersion": "apps.kruise.io/v1alpha1", "kind": "ImagePullJob",
                        "metadata": {"name": format!("probe-{i}")},
                        "spec": {"image": "nginx:1.25", "completionPolicy": {}}})
                        .to_string();
                    while !stop.load(Ordering::Relaxed) {
                        let args = [
                            "create",
                            "--dry-run=server",
                            "-o",
                            "json",
                            "-n",
                            &ns,
                            "-f",
                            "-",
                        ];
                        let (done, out, err) = c.kubectl_result(&args, Some(&job)).unwrap();
                        let defaulted = serde_json::from_str::<Value>(&out)
                            .is_ok_and(|v| v["spec"]["completionPolicy"]["type"] == "Always");
                        if done && defaulted {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            failed.lock().unwrap().push(format!("{err}{out}"));
                        }
                    }
                })
            })
            .collect::<Vec<_>>();
        let handshakes = Arc::new(AtomicUsize::new(0));
        loops.push({
            let c = c.clone();
            let (stop, count, failed) = (stop.clone(), handshakes.clone(), failed.clone());
            let began = Instant::now();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Some(bundle) = published_bundle(&c) else {
                        failed.lock().unwrap().push("no caBundle published".into());
                        continue;
                    };
                    for ip in controller_ips(&c) {
                        if let Err(why) = handshake(&c, &ip, &bundle) {
                            failed.lock().unwrap().push(format!(
                                "{ip} serves a certificate the published caBundle does not vouch for \
                                 ({:.1}s in; {why})",
                                began.elapsed().as_secs_f64()
                            ));
                        }
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        });
        Self {
            stop,
            ok,
            handshakes,
            failed,
            loops,
        }
    }

    /// The failures so far.
    fn failures(&self) -> Vec<String> {
        self.failed.lock().unwrap().clone()
    }

    fn ok(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the loops: (admissions and handshakes that succeeded,
    /// failures).
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for l in self.loops {
            l.join().unwrap();
        }
        let failed = self.failed.lock().unwrap().clone();
        let (ok, handshakes) = (
            self.ok.load(Ordering::Relaxed),
            self.handshakes.load(Ordering::Relaxed),
        );
        eprintln!(
            "{ok} admissions, {handshakes} handshakes, {} failed",
            failed.len()
        );
        (ok, failed)
    }
}

/// Sends admissions for `d`, then returns how many succeeded meanwhile.
fn admitted_during(a: &Admissions, d: Duration) -> usize {
    let before = a.ok();
    let until = Instant::now() + d;
    while Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
    }
    a.ok() - before
}

/// The controller replicas' log lines about certificates and the
/// caBundle, for a failure's message.
fn certificate_logs(c: &Cluster) -> String {
    let pods = c
        .get_json(&[
            "-n",
            NS,
            "pods",
            "-l",
            "app.kubernetes.io/name=keelson-controller",
        ])
        .unwrap_or_default();
    let mut out = String::new();
    for p in pods["items"].as_array().into_iter().flatten() {
        let name = p["metadata"]["name"].as_str().unwrap_or_default();
        let ip = p["status"]["podIP"].as_str().unwrap_or_default();
        out += &format!("--- {name} ({ip})\n");
        for l in c
            .kubectl(&["-n", NS, "logs", name])
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("certificate") || l.contains("caBundle"))
        {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// The failures, first and last few, for an assertion's message.
fn summary(failed: &[String]) -> String {
    let n = failed.len();
    let mut shown: Vec<&String> = failed.iter().take(3).collect();
    if n > 6 {
        shown.extend(&failed[n - 3..]);
    } else {
        shown.extend(failed.iter().skip(3));
    }
    shown
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join("\n  ")
}
