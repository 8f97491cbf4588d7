//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go's
//! leader election does it: the holder renews the Lease within its
//! duration; a Lease not renewed for `leaseDurationSeconds` may be taken
//! over (its transition count goes up); every write carries the
//! resourceVersion that was read, so two candidates racing for one Lease
//! cannot both win (the loser gets 409 Conflict). Only the leader runs the
//! reconcilers.
//!
//! [`decide`] is the rule (no I/O); [`try_lead`] applies it through the API.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

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

fn micros(t: &MicroTime) -> i64 {
    t.0.as_microsecond()
}

/// The rule: given the Lease as read (or none), who we are and the time.
pub fn decide(
    current: Option<&Lease>,
    name: &str,
    namespace: &str,
    me: &str,
    now: &MicroTime,
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
                acquire_time: Some(now.clone()),
                renew_time: Some(now.clone()),
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
    next_spec.renew_time = Some(now.clone());
    if holder == me {
        return Step::Update(next);
    }
    let held_for = i64::from(spec.lease_duration_seconds.unwrap_or(duration_seconds)) * 1_000_000;
    let expires = spec
        .renew_time
        .as_ref()
        .map_or(i64::MIN, |r| micros(r) + held_for);
    if !holder.is_empty() && micros(now) < expires {
        return Step::Follow {
            holder,
            retry_seconds: ((expires - micros(now)) / 1_000_000).clamp(1, 2),
        };
    }
    next_spec.holder_identity = Some(me.into());
    next_spec.acquire_time = Some(now.clone());
    next_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    Step::Update(next)
}

/// One round: read the Lease, apply [`decide`], write. `Ok(true)` when we
/// lead now; a lost race (409) or a live leader is `Ok(false)`.
pub async fn try_lead(
    api: &Api<Lease>,
    name: &str,
    namespace: &str,
    me: &str,
    now: &MicroTime,
    duration_seconds: i32,
) -> Result<bool, kube::Error> {
    let current = api.get_opt(name).await?;
    let step = decide(current.as_ref(), name, namespace, me, now, duration_seconds);
    let written = match step {
        Step::Follow { .. } => return Ok(false),
        Step::Create(lease) => api.create(&PostParams::default(), &lease).await,
        Step::Update(lease) => api.replace(name, &PostParams::default(), &lease).await,
    };
    match written {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests;
