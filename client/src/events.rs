//! An event recorder writing `events.k8s.io/v1` Events the way client-go's events library
//! does: the first occurrence creates an Event; a repeat of the same event (same object,
//! related object, type, reason, action and note) within six minutes turns it into a series
//! (`series.count`, `series.lastObservedTime`) instead of a new Event; and a per-event token
//! bucket (a burst of 25, then one per five minutes) drops floods.
//!
//! ```no_run
//! use bosun_client::events::{EventType, Recorder};
//! # async fn run(client: bosun_client::Client, pod: bosun_api_types::core::v1::Pod) {
//! let recorder = Recorder::new(client, "my-controller", "pod-a");
//! let regarding = Recorder::reference_to(&pod);
//! recorder
//!     .publish(&regarding, EventType::Normal, "Scaled", "Scale", "scaled to 3 replicas")
//!     .await
//!     .ok();
//! # }
//! ```

use crate::api::{Api, Patch, PatchParams, PostParams};
use crate::client::Client;
use crate::error::Result;
use bosun_api_types::core::v1::ObjectReference;
use bosun_api_types::events::v1::{Event, EventSeries};
use bosun_api_types::{MicroTime, Resource};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a repeat still belongs to the same series (client-go: 6 minutes).
const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);
/// Series updates of one event are sent at most this often.
const SERIES_FLUSH: Duration = Duration::from_secs(30);
/// Events of one kind allowed at once, and the refill period (client-go's spam filter).
const BURST: f64 = 25.0;
const REFILL: Duration = Duration::from_secs(300);

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Informational.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct EventKey {
    regarding: (String, String, String, String),
    event_type: EventType,
    reason: String,
    action: String,
    note: String,
}

struct Seen {
    name: String,
    last: Instant,
    count: i32,
    flushed_count: i32,
    flushed_at: Instant,
    tokens: f64,
    refilled: Instant,
}

/// Records events for one reporting controller instance. Cheap to share behind an `Arc`.
///
/// ```no_run
/// use bosun_api_types::core::v1::Pod;
/// use bosun_client::events::{EventType, Recorder};
/// # async fn run(client: bosun_client::Client, pod: Pod) -> bosun_client::Result<()> {
/// let recorder = Recorder::core(client, "my-controller", "host-1");
/// let about = Recorder::reference_to(&pod);
/// // Repeats of the same event are counted on one object, as upstream's recorder does.
/// recorder.publish(&about, EventType::Normal, "Checked", "Check", "all good").await?;
/// # Ok(()) }
/// ```
pub struct Recorder {
    client: Client,
    controller: String,
    instance: String,
    core: bool,
    seen: Mutex<HashMap<EventKey, Seen>>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("controller", &self.controller)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

/// What to send for one `publish`.
enum Send {
    Create,
    Series { name: String, count: i32 },
    Nothing,
}

impl Recorder {
    /// A recorder reporting as `controller` (`reportingController`) from `instance`
    /// (`reportingInstance`, such as the pod name).
    pub fn new(client: Client, controller: &str, instance: &str) -> Self {
        Recorder {
            client,
            controller: controller.to_owned(),
            instance: instance.to_owned(),
            core: false,
            seen: Mutex::default(),
        }
    }

    /// A recorder writing core/v1 Events instead, as client-go's older `record` package (used
    /// by kube-controller-manager's workload controllers) does: `source.component`,
    /// `firstTimestamp`/`lastTimestamp` and `count` for repeats. `kubectl describe` lists
    /// these.
    pub fn core(client: Client, component: &str, host: &str) -> Self {
        Recorder {
            core: true,
            ..Recorder::new(client, component, host)
        }
    }

    /// A reference to `obj` for `regarding`.
    pub fn reference_to<K: Resource>(obj: &K) -> ObjectReference {
        let m = obj.metadata();
        ObjectReference {
            api_version: Some(K::INFO.api_version.to_owned()),
            kind: Some(K::INFO.kind.to_owned()),
            namespace: m.namespace.clone(),
            name: m.name.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            ..Default::default()
        }
    }

    /// Records one occurrence of an event about `regarding`.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        event_type: EventType,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<()> {
        let key = EventKey {
            regarding: (
                regarding.kind.clone().unwrap_or_default(),
                regarding.namespace.clone().unwrap_or_default(),
                regarding.name.clone().unwrap_or_default(),
                regarding.uid.clone().unwrap_or_default(),
            ),
            event_type,
            reason: reason.to_owned(),
            action: action.to_owned(),
            note: note.to_owned(),
        };
        let namespace = regarding
            .namespace
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "default".to_owned());
        let now = Instant::now();
        let decision = {
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.retain(|_, s| now.duration_since(s.last) < SERIES_WINDOW);
            match seen.get_mut(&key) {
                None => Send::Create,
                Some(s) => {
                    // The spam filter: a token per occurrence.
                    let refill =
                        now.duration_since(s.refilled).as_secs_f64() / REFILL.as_secs_f64();
                    s.tokens = (s.tokens + refill).min(BURST);
                    s.refilled = now;
                    if s.tokens < 1.0 {
                        tracing::debug!(reason, "event dropped by the rate limit");
                        return Ok(());
                    }
                    s.tokens -= 1.0;
                    s.count += 1;
                    s.last = now;
                    // The first repeat makes it a series at once; later ones are batched.
                    if s.flushed_count == 1 || now.duration_since(s.flushed_at) >= SERIES_FLUSH {
                        s.flushed_count = s.count;
                        s.flushed_at = now;
                        Send::Series {
                            name: s.name.clone(),
                            count: s.count,
                        }
                    } else {
                        Send::Nothing
                    }
                }
            }
        };
        if self.core {
            return self
                .send_core(
                    decision, key, regarding, event_type, reason, action, note, &namespace, now,
                )
                .await;
        }
        let events: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        match decision {
            Send::Nothing => Ok(()),
            Send::Series { name, count } => {
                let series = EventSeries {
                    count,
                    last_observed_time: MicroTime::now(),
                };
                let patch = serde_json::json!({"series": series});
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Send::Create => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let mut event = Event {
                    event_time: MicroTime::now(),
                    reporting_controller: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    action: Some(action.to_owned()),
                    reason: Some(reason.to_owned()),
                    regarding: Some(regarding.clone()),
                    note: Some(note.to_owned()),
                    r#type: Some(event_type.as_str().to_owned()),
                    ..Default::default()
                };
                event.metadata.name = Some(format!(
                    "{}.{stamp:x}",
                    regarding.name.clone().unwrap_or_default()
                ));
                event.metadata.namespace = Some(namespace.clone());
                let created = events.create(&PostParams::default(), &event).await?;
                self.remember(key, created.metadata.name.unwrap_or_default(), now);
                Ok(())
            }
        }
    }
}

impl Recorder {
    /// Notes that the event `key` was created as `name`: its repeats become a series of it.
    fn remember(&self, key: EventKey, name: String, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(
            key,
            Seen {
                name,
                last: now,
                count: 1,
                flushed_count: 1,
                flushed_at: now,
                tokens: BURST - 1.0,
                refilled: now,
            },
        );
    }

    /// The core/v1 form of [`Recorder::publish`]'s decision.
    #[allow(clippy::too_many_arguments)]
    async fn send_core(
        &self,
        decision: Send,
        key: EventKey,
        regarding: &ObjectReference,
        event_type: EventType,
        reason: &str,
        action: &str,
        note: &str,
        namespace: &str,
        now: Instant,
    ) -> Result<()> {
        use bosun_api_types::core::v1::{Event as CoreEvent, EventSource};
        let events: Api<CoreEvent> = Api::namespaced(self.client.clone(), namespace);
        match decision {
            Send::Nothing => Ok(()),
            Send::Series { name, count } => {
                let patch = serde_json::json!({"count": count, "lastTimestamp": bosun_api_types::Time::now()});
                events
                    .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map(|_| ())
            }
            Send::Create => {
                let stamp = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0);
                let t = bosun_api_types::Time::now();
                let mut event = CoreEvent {
                    involved_object: regarding.clone(),
                    reason: Some(reason.to_owned()),
                    message: Some(note.to_owned()),
                    source: Some(EventSource {
                        component: Some(self.controller.clone()),
                        host: None,
                    }),
                    first_timestamp: Some(t),
                    last_timestamp: Some(t),
                    count: Some(1),
                    r#type: Some(event_type.as_str().to_owned()),
                    action: Some(action.to_owned()).filter(|a| !a.is_empty()),
                    reporting_component: Some(self.controller.clone()),
                    reporting_instance: Some(self.instance.clone()),
                    ..Default::default()
                };
                event.metadata.name = Some(format!(
                    "{}.{stamp:x}",
                    regarding.name.clone().unwrap_or_default()
                ));
                event.metadata.namespace = Some(namespace.to_owned());
                let created = events.create(&PostParams::default(), &event).await?;
                self.remember(key, created.metadata.name.unwrap_or_default(), now);
                Ok(())
            }
        }
    }
}
