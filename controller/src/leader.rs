//! Leader election on a `coordination.k8s.io/v1` Lease, with the rules of
//! client-go's leader election (read for its behaviour, not copied):
//!
//! - **Nobody's clock but our own.** A candidate never compares the
//!   holder's `renewTime` with its own wall clock (the two clocks may
//!   disagree by more than the lease). It notes when *it* saw the Lease's
//!   record change ([`Observed`], on this process's monotonic clock) and
//!   takes over only when the record has stood still for the holder's
//!   `leaseDurationSeconds` since then.
//! - **A renew deadline shorter than the lease.** The leader counts its
//!   leadership from the start of its last successful write: after
//!   [`Timing::renew_deadline`] without another one it is no longer the
//!   leader, whatever happened meanwhile (API server away, a request
//!   hanging, the process paused), while the others wait the whole lease
//!   from when they saw that write. The gap between the two is the margin.
//! - **Fenced writes.** The reconcilers' client goes through a [`Fence`]
//!   that refuses every writing request once the renew deadline has
//!   passed, checked at the moment of each request: a replica resumed from
//!   a pause (SIGSTOP, a VM freeze) cannot write before its election loop
//!   has even run, and steps down when it does.
//! - Every Lease write carries the resourceVersion that was read, so two
//!   candidates racing for one Lease cannot both win (the loser gets 409).
//!
//! [`decide`] and [`still_leading`] are the rules (no I/O); [`Elector`]
//! applies them through the API.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{Method, Request, Response};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::client::Body;

/// The election's timings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long the others wait, from when they saw the last renewal,
    /// before taking over (the Lease's `leaseDurationSeconds`).
    pub lease: Duration,
    /// How long the leader acts after the start of its last successful
    /// renewal; shorter than `lease`.
    pub renew_deadline: Duration,
    /// Pause between rounds.
    pub retry: Duration,
}

impl Timing {
    /// client-go's defaults: 15 s lease, 10 s renew deadline, 2 s retry.
    pub const DEFAULT: Timing = Timing {
        lease: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry: Duration::from_secs(2),
    };

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.lease.as_secs()).unwrap_or(i32::MAX)
    }
}

/// What to do with the Lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// No Lease yet: create this one (we lead once it is created).
    Create(Lease),
    /// Write this one (renewal or take-over; carries the resourceVersion
    /// read).
    Update(Lease),
    /// Someone else leads; look again in `retry_seconds`.
    Follow { holder: String, retry_seconds: i64 },
}

/// The Lease record as this replica last saw it change, and when (on this
/// process's monotonic clock).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    record: Option<LeaseSpec>,
    at: Option<Instant>,
}

impl Observed {
    /// Notes the record read at `now`; the time moves only when the record
    /// differs from the one seen before.
    pub fn note(&mut self, record: Option<&LeaseSpec>, now: Instant) {
        if self.at.is_none() || self.record.as_ref() != record {
            self.record = record.cloned();
            self.at = Some(now);
        }
    }

    /// When the current record was first seen.
    pub fn since(&self) -> Option<Instant> {
        self.at
    }
}

/// The rule: given the Lease as read (or none), when this replica saw its
/// record change (`observed`, already [noted](Observed::note) with it),
/// who we are, the wall time to write into the Lease and the monotonic
/// time to judge by.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    current: Option<&Lease>,
    observed: &Observed,
    name: &str,
    namespace: &str,
    me: &str,
    wall: &MicroTime,
    now: Instant,
    duration_seconds: i32,
) -> Step {
    let Some(lease) = current else {
        return Step::Create(Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(namespace.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(me.into()),
                lease_duration_seconds: Some(duration_seconds),
                acquire_time: Some(wall.clone()),
                renew_time: Some(wall.clone()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        });
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let mut next = lease.clone();
    let next_spec = next.spec.get_or_insert_with(LeaseSpec::default);
    next_spec.lease_duration_seconds = Some(duration_seconds);
    next_spec.renew_time = Some(wall.clone());
    if holder == me {
        return Step::Update(next);
    }
    let held_for = Duration::from_secs(
        u64::try_from(spec.lease_duration_seconds.unwrap_or(duration_seconds)).unwrap_or(0),
    );
    let expires = observed.since().map(|t| t + held_for);
    if let (false, Some(expires)) = (holder.is_empty(), expires)
        && now < expires
    {
        let left = expires.saturating_duration_since(now).as_secs();
        return Step::Follow {
            holder,
            retry_seconds: i64::try_from(left).unwrap_or(2).clamp(1, 2),
        };
    }
    next_spec.holder_identity = Some(me.into());
    next_spec.acquire_time = Some(wall.clone());
    next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    Step::Update(next)
}

/// Whether a leader whose last successful renewal started at `renewed`
/// still leads at `now`.
pub fn still_leading(renewed: Option<Instant>, now: Instant, renew_deadline: Duration) -> bool {
    renewed.is_some_and(|r| now < r + renew_deadline)
}

/// Whether `method` writes (anything but GET, HEAD, OPTIONS).
pub fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Until when this replica may write, shared by the election loop and the
/// reconcilers' client.
#[derive(Debug, Default)]
pub struct Fence {
    until: Mutex<Option<Instant>>,
}

impl Fence {
    /// Writes are allowed until `until`.
    pub fn grant(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = Some(until);
    }

    /// No more writes.
    pub fn revoke(&self) {
        *self.until.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Whether a request with `method` may go out at `now`.
    pub fn allows(&self, method: &Method, now: Instant) -> bool {
        !writes(method)
            || self
                .until
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|u| now < u)
    }
}

/// A write refused by the [`Fence`].
#[derive(Debug, thiserror::Error)]
#[error("not the leader (renew deadline passed): {method} {path} refused")]
pub struct NotLeading {
    pub method: Method,
    pub path: String,
}

/// Writing requests the reconcilers' [`fenced`] client let through.
pub static WRITES_SENT: AtomicU64 = AtomicU64::new(0);
/// Writing requests it refused (not the leader at the time).
pub static WRITES_REFUSED: AtomicU64 = AtomicU64::new(0);

/// `client` with every writing request checked against `fence` when it is
/// sent (a refused one fails with [`NotLeading`] and never reaches the API
/// server). Reads and watches go through.
pub fn fenced(client: Client, fence: Arc<Fence>) -> Client {
    let namespace = client.default_namespace().to_string();
    let service = tower::service_fn(move |req: Request<Body>| {
        let client = client.clone();
        let fence = fence.clone();
        async move {
            if !fence.allows(req.method(), Instant::now()) {
                WRITES_REFUSED.fetch_add(1, Ordering::Relaxed);
                let refused = NotLeading {
                    method: req.method().clone(),
                    path: req.uri().path().to_string(),
                };
                tracing::warn!(method = %refused.method, path = %refused.path, "write refused: not the leader");
                return Err::<Response<Body>, tower::BoxError>(Box::new(refused));
            }
            if writes(req.method()) {
                WRITES_SENT.fetch_add(1, Ordering::Relaxed);
            }
            client.send(req).await.map_err(Into::into)
        }
    });
    Client::new(service, namespace)
}

/// Why a round failed.
#[derive(Debug, thiserror::Error)]
pub enum ElectionError {
    #[error("API server: {0}")]
    Api(#[from] kube::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// This replica's side of the election.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    namespace: String,
    me: String,
    timing: Timing,
    observed: Observed,
    /// Start of the last successful renewal (while leading).
    renewed: Option<Instant>,
    fence: Arc<Fence>,
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, namespace: &str, me: &str, timing: Timing) -> Self {
        Self {
            api,
            name: name.into(),
            namespace: namespace.into(),
            me: me.into(),
            timing,
            observed: Observed::default(),
            renewed: None,
            fence: Arc::new(Fence::default()),
        }
    }

    /// The fence the reconcilers' client goes through ([`fenced`]).
    pub fn fence(&self) -> Arc<Fence> {
        self.fence.clone()
    }

    /// One round, bounded by half the renew deadline: read the Lease, apply
    /// [`decide`], write. Returns whether we lead afterwards, and the
    /// round's failure if any (a leader that failed to renew leads on
    /// until its renew deadline; one that sees another holder stops at
    /// once).
    pub async fn round(&mut self) -> (bool, Option<ElectionError>) {
        let started = Instant::now();
        let limit = self.timing.renew_deadline / 2;
        let error = match tokio::time::timeout(limit, self.try_once(started)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(ElectionError::Api(e)),
            Err(_) => Some(ElectionError::Timeout(limit)),
        };
        let leading = still_leading(self.renewed, Instant::now(), self.timing.renew_deadline);
        if !leading {
            self.renewed = None;
            self.fence.revoke();
        }
        (leading, error)
    }

    async fn try_once(&mut self, started: Instant) -> Result<(), kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        self.observed.note(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            Instant::now(),
        );
        let step = decide(
            current.as_ref(),
            &self.observed,
            &self.name,
            &self.namespace,
            &self.me,
            &MicroTime(k8s_openapi::jiff::Timestamp::now()),
            Instant::now(),
            self.timing.lease_seconds(),
        );
        let written = match step {
            Step::Follow { .. } => {
                self.renewed = None;
                return Ok(());
            }
            Step::Create(lease) => self.api.create(&PostParams::default(), &lease).await,
            Step::Update(lease) => {
                self.api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match written {
            Ok(lease) => {
                self.observed.note(lease.spec.as_ref(), Instant::now());
                self.renewed = Some(started);
                self.fence.grant(started + self.timing.renew_deadline);
                Ok(())
            }
            // Someone else wrote first: not renewed this round.
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests;
