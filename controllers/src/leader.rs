//! Leader election on a `coordination.k8s.io/v1` Lease, with client-go's rules and timings.
//!
//! A candidate takes the Lease when it is free or its holder has not renewed it within the
//! lease duration (judged by when *this* candidate last saw the record change, so clocks need
//! not agree), then renews it every retry period. A leader that cannot renew within the renew
//! deadline has lost leadership and must stop. [`Leadership::release`] hands the Lease back
//! at shutdown so that the next candidate does not wait for it to expire.
//!
//! ```no_run
//! use bosun_controllers::leader::LeaderElection;
//! # async fn run(client: bosun_client::Client) {
//! let election = LeaderElection::new(client, "kube-system", "my-controller", "pod-a");
//! let leadership = election.acquire().await;
//! tokio::select! {
//!     () = leadership.lost() => tracing::error!("lost the lease; stopping"),
//!     () = async { /* run the controllers */ } => {}
//! }
//! leadership.release().await;
//! # }
//! ```

use bosun_api_types::coordination::v1::{Lease, LeaseSpec};
use bosun_api_types::MicroTime;
use bosun_client::{Api, Client, PostParams};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Election timings (client-go's defaults: 15 s, 10 s, 2 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// How long a holder's claim lasts without renewal.
    pub lease_duration: Duration,
    /// How long a leader keeps trying to renew before it gives up leadership.
    pub renew_deadline: Duration,
    /// How often candidates try and leaders renew.
    pub retry_period: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A candidate for one Lease.
///
/// ```no_run
/// use bosun_controllers::leader::LeaderElection;
/// # async fn run(client: bosun_client::Client) {
/// let election = LeaderElection::new(client, "kube-system", "my-controller", "host-1");
/// let leadership = election.acquire().await;
/// tokio::select! {
///     () = do_the_work() => leadership.release().await,
///     () = leadership.lost() => tracing::error!("leadership lost"),
/// }
/// # }
/// # async fn do_the_work() {}
/// ```
#[derive(Clone, Debug)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    timings: Timings,
}

/// What a candidate last observed of the Lease, and when.
struct Observed {
    record: Option<LeaseSpec>,
    at: Instant,
}

impl LeaderElection {
    /// A candidate `identity` for Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        LeaderElection {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            timings: Timings::default(),
        }
    }

    /// Other timings.
    pub fn with_timings(mut self, timings: Timings) -> Self {
        self.timings = timings;
        self
    }

    /// One attempt to take or renew the Lease; true if this candidate holds it now.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> bool {
        let now = MicroTime::now();
        let duration = i32::try_from(self.timings.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let current = match self.api.get_opt(&self.name).await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "reading the lease failed");
                return false;
            }
        };
        let Some(mut lease) = current else {
            let mut lease = Lease::default();
            lease.metadata.name = Some(self.name.clone());
            lease.spec = Some(LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(duration),
                acquire_time: Some(now),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            });
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(l) => {
                    *observed = Observed {
                        record: l.spec,
                        at: Instant::now(),
                    };
                    true
                }
                Err(e) => {
                    tracing::debug!(error = %e, "creating the lease failed");
                    false
                }
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if observed.record.as_ref() != Some(&spec) {
            *observed = Observed {
                record: Some(spec.clone()),
                at: Instant::now(),
            };
        }
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let held_by_me = holder == self.identity;
        let their_duration = Duration::from_secs(
            spec.lease_duration_seconds
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or(0),
        );
        if !holder.is_empty() && !held_by_me && observed.at.elapsed() < their_duration {
            return false;
        }
        let mut next = spec.clone();
        next.holder_identity = Some(self.identity.clone());
        next.lease_duration_seconds = Some(duration);
        next.renew_time = Some(now);
        if !held_by_me {
            next.acquire_time = Some(now);
            next.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(next);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(l) => {
                *observed = Observed {
                    record: l.spec,
                    at: Instant::now(),
                };
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "updating the lease failed");
                false
            }
        }
    }

    fn jittered(&self) -> Duration {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        // client-go's JitterFactor 1.2: up to 120% more.
        self.timings
            .retry_period
            .mul_f64(1.0 + 1.2 * f64::from(nanos % 1000) / 1000.0)
    }

    /// Waits until this candidate holds the Lease, then keeps renewing it in the background.
    pub async fn acquire(&self) -> Leadership {
        let mut observed = Observed {
            record: None,
            at: Instant::now(),
        };
        while !self.try_acquire_or_renew(&mut observed).await {
            tokio::time::sleep(self.jittered()).await;
        }
        tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
        let (lost_tx, lost_rx) = watch::channel(false);
        let (stop_tx, mut stop_rx) = watch::channel(false);
        let me = self.clone();
        let renewer = tokio::spawn(async move {
            let mut last_renew = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(me.timings.retry_period) => {}
                    _ = stop_rx.changed() => return observed,
                }
                if me.try_acquire_or_renew(&mut observed).await {
                    last_renew = Instant::now();
                } else if last_renew.elapsed() >= me.timings.renew_deadline {
                    tracing::warn!(lease = %me.name, identity = %me.identity, "failed to renew the lease; leadership lost");
                    let _ = lost_tx.send(true);
                    return observed;
                }
            }
        });
        Leadership {
            election: self.clone(),
            lost: lost_rx,
            stop: stop_tx,
            renewer: Arc::new(tokio::sync::Mutex::new(Some(renewer))),
        }
    }
}

/// Held leadership: renewed in the background until [`Leadership::release`] or loss.
#[derive(Debug)]
pub struct Leadership {
    election: LeaderElection,
    lost: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    renewer: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<Observed>>>>,
}

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observed").finish_non_exhaustive()
    }
}

impl Leadership {
    /// Resolves when leadership is lost (renewal failed for the renew deadline).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Whether leadership has been lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Stops renewing without handing the Lease back (as if the process died): others take it
    /// once it expires.
    pub async fn abandon(&self) {
        let _ = self.stop.send(true);
        if let Some(h) = self.renewer.lock().await.take() {
            let _ = h.await;
        }
    }

    /// Stops renewing and hands the Lease back (holder cleared, duration 1 s), so the next
    /// candidate takes it at once.
    pub async fn release(&self) {
        self.abandon().await;
        if self.is_lost() {
            return;
        }
        let e = &self.election;
        let Ok(Some(mut lease)) = e.api.get_opt(&e.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(e.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime::now());
        if let Err(err) = e.api.replace(&e.name, &PostParams::default(), &lease).await {
            tracing::warn!(error = %err, "releasing the lease failed");
        }
    }
}
