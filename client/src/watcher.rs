//! `watcher`: a list followed by a watch that never gives up. It resumes from the last
//! resourceVersion it saw (bookmarks included) when a watch ends or fails, lists again when the
//! server says that version is gone (410), and backs off exponentially on errors.
//!
//! ```no_run
//! use bosun_client::{watcher, Api, Client};
//! use bosun_api_types::core::v1::Pod;
//! use futures_util::StreamExt;
//! # async fn run(client: Client) {
//! let pods: Api<Pod> = Api::all(client);
//! let mut events = std::pin::pin!(watcher::watcher(pods, watcher::Config::default()));
//! while let Some(event) = events.next().await {
//!     match event {
//!         Ok(watcher::Event::Apply(pod)) => tracing::info!(name = ?pod.metadata.name, "changed"),
//!         Ok(_) => {}
//!         Err(e) => tracing::warn!(error = %e, "watch trouble; retrying"),
//!     }
//! }
//! # }
//! ```

use crate::api::{Api, ListParams, WatchParams};
use crate::error::{Error, Result};
use bosun_api_types::Resource;
use futures_util::{Stream, StreamExt};
use std::time::Duration;

/// What a watcher reports.
#[derive(Clone, Debug, PartialEq)]
pub enum Event<K> {
    /// A (re)list starts: what follows until [`Event::InitDone`] is the complete state.
    Init,
    /// An object of the (re)list.
    InitApply(K),
    /// The (re)list is complete: objects not seen since [`Event::Init`] are gone.
    InitDone,
    /// An object was created or changed.
    Apply(K),
    /// An object was deleted (its last state).
    Delete(K),
}

/// How a watcher lists and watches.
#[derive(Clone, Debug)]
pub struct Config {
    /// `labelSelector`.
    pub label_selector: Option<String>,
    /// `fieldSelector`.
    pub field_selector: Option<String>,
    /// Page size of lists.
    pub page_size: u32,
    /// How long one watch request lasts before it is renewed (the server's `timeoutSeconds`).
    pub watch_timeout: Duration,
    /// First delay after an error.
    pub min_backoff: Duration,
    /// Longest delay after repeated errors.
    pub max_backoff: Duration,
    /// Get the initial state from the watch itself (`sendInitialEvents`, a *streaming list*)
    /// instead of a list request: one request, and no large list response to hold.
    pub streaming_list: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            label_selector: None,
            field_selector: None,
            page_size: 500,
            watch_timeout: Duration::from_secs(290),
            min_backoff: Duration::from_millis(800),
            max_backoff: Duration::from_secs(30),
            streaming_list: false,
        }
    }
}

impl Config {
    /// Only objects with these labels.
    pub fn labels(mut self, selector: &str) -> Self {
        self.label_selector = Some(selector.to_owned());
        self
    }

    /// Only objects with these fields.
    pub fn fields(mut self, selector: &str) -> Self {
        self.field_selector = Some(selector.to_owned());
        self
    }
}

enum State<K: Resource> {
    /// List (again) from scratch.
    Empty,
    /// A streaming list is under way: ADDED events are the initial state until the bookmark
    /// that ends it.
    Streaming {
        stream: futures_util::stream::BoxStream<
            'static,
            Result<bosun_api_types::meta::v1::WatchEvent<K>>,
        >,
    },
    /// Emitting a finished list.
    Listed {
        items: std::vec::IntoIter<K>,
        resource_version: String,
    },
    /// Watch from this version (open a new watch).
    Resume { resource_version: String },
    /// A watch is open.
    Watching {
        resource_version: String,
        stream: futures_util::stream::BoxStream<
            'static,
            Result<bosun_api_types::meta::v1::WatchEvent<K>>,
        >,
    },
}

struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay to wait now (with up to 20% jitter), doubling the next one.
    fn delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|t| t.subsec_nanos())
            .unwrap_or(0);
        d + d.mul_f64(f64::from(nanos % 200) / 1000.0)
    }
}

/// A never-ending stream of the state and changes of `api`'s objects. Errors are reported as
/// they happen and the watcher carries on (after a backoff).
///
/// ```no_run
/// use bosun_api_types::core::v1::ConfigMap;
/// use bosun_client::watcher::{watcher, Config, Event};
/// use bosun_client::{Api, Client};
/// use futures_util::StreamExt;
/// # async fn run() -> bosun_client::Result<()> {
/// let config_maps: Api<ConfigMap> = Api::namespaced(Client::try_default()?, "default");
/// let mut events = std::pin::pin!(watcher(config_maps, Config::default().labels("app=web")));
/// while let Some(event) = events.next().await {
///     match event? {
///         Event::InitApply(cm) | Event::Apply(cm) => tracing::info!(name = ?cm.metadata.name, "now"),
///         Event::Delete(cm) => tracing::info!(name = ?cm.metadata.name, "deleted"),
///         Event::Init | Event::InitDone => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub fn watcher<K: Resource>(
    api: Api<K>,
    config: Config,
) -> impl Stream<Item = Result<Event<K>>> + Send {
    let backoff = Backoff {
        next: config.min_backoff,
        min: config.min_backoff,
        max: config.max_backoff,
    };
    futures_util::stream::unfold(
        (State::Empty, api, config, backoff),
        |(state, api, config, mut backoff)| async move {
            let mut state: State<K> = state;
            loop {
                match state {
                    State::Empty if config.streaming_list => {
                        let params = WatchParams {
                            label_selector: config.label_selector.clone(),
                            field_selector: config.field_selector.clone(),
                            timeout_seconds: Some(config.watch_timeout.as_secs().max(1) as u32),
                            bookmarks: true,
                            send_initial_events: true,
                        };
                        match api.watch(&params, "").await {
                            Ok(stream) => {
                                return Some((
                                    Ok(Event::Init),
                                    (
                                        State::Streaming {
                                            stream: stream.boxed(),
                                        },
                                        api,
                                        config,
                                        backoff,
                                    ),
                                ));
                            }
                            Err(e) => {
                                tokio::time::sleep(backoff.delay()).await;
                                return Some((Err(e), (State::Empty, api, config, backoff)));
                            }
                        }
                    }
                    State::Streaming { mut stream } => match stream.next().await {
                        // The stream ended before the initial state was complete: again.
                        None => state = State::Empty,
                        Some(Err(e)) => {
                            tokio::time::sleep(backoff.delay()).await;
                            return Some((Err(e), (State::Empty, api, config, backoff)));
                        }
                        Some(Ok(ev)) => {
                            let meta = ev.object.metadata();
                            let ended = ev.r#type == "BOOKMARK"
                                && meta
                                    .annotations
                                    .get("k8s.io/initial-events-end")
                                    .map(String::as_str)
                                    == Some("true");
                            if ended {
                                backoff.reset();
                                let resource_version =
                                    meta.resource_version.clone().unwrap_or_default();
                                return Some((
                                    Ok(Event::InitDone),
                                    (
                                        State::Watching {
                                            resource_version,
                                            stream,
                                        },
                                        api,
                                        config,
                                        backoff,
                                    ),
                                ));
                            }
                            let next = State::Streaming { stream };
                            if ev.r#type == "ADDED" {
                                return Some((
                                    Ok(Event::InitApply(ev.object)),
                                    (next, api, config, backoff),
                                ));
                            }
                            state = next;
                        }
                    },
                    State::Empty => match list_all(&api, &config).await {
                        Ok((items, rv)) => {
                            backoff.reset();
                            return Some((
                                Ok(Event::Init),
                                (
                                    State::Listed {
                                        items: items.into_iter(),
                                        resource_version: rv,
                                    },
                                    api,
                                    config,
                                    backoff,
                                ),
                            ));
                        }
                        Err(e) => {
                            tokio::time::sleep(backoff.delay()).await;
                            return Some((Err(e), (State::Empty, api, config, backoff)));
                        }
                    },
                    State::Listed {
                        mut items,
                        resource_version,
                    } => {
                        return match items.next() {
                            Some(k) => Some((
                                Ok(Event::InitApply(k)),
                                (
                                    State::Listed {
                                        items,
                                        resource_version,
                                    },
                                    api,
                                    config,
                                    backoff,
                                ),
                            )),
                            None => Some((
                                Ok(Event::InitDone),
                                (State::Resume { resource_version }, api, config, backoff),
                            )),
                        };
                    }
                    State::Resume { resource_version } => {
                        let params = WatchParams {
                            label_selector: config.label_selector.clone(),
                            field_selector: config.field_selector.clone(),
                            timeout_seconds: Some(config.watch_timeout.as_secs().max(1) as u32),
                            bookmarks: true,
                            send_initial_events: false,
                        };
                        match api.watch(&params, &resource_version).await {
                            Ok(stream) => {
                                state = State::Watching {
                                    resource_version,
                                    stream: stream.boxed(),
                                };
                            }
                            Err(e) if e.is_gone() => state = State::Empty,
                            Err(e) => {
                                tokio::time::sleep(backoff.delay()).await;
                                return Some((
                                    Err(e),
                                    (State::Resume { resource_version }, api, config, backoff),
                                ));
                            }
                        }
                    }
                    State::Watching {
                        mut resource_version,
                        mut stream,
                    } => match stream.next().await {
                        None => state = State::Resume { resource_version },
                        Some(Err(e)) if e.is_gone() => {
                            tracing::debug!("watch resource version expired; listing again");
                            state = State::Empty;
                        }
                        Some(Err(e)) => {
                            tokio::time::sleep(backoff.delay()).await;
                            return Some((
                                Err(e),
                                (State::Resume { resource_version }, api, config, backoff),
                            ));
                        }
                        Some(Ok(ev)) => {
                            backoff.reset();
                            if let Some(rv) = ev.object.metadata().resource_version.clone() {
                                resource_version = rv;
                            }
                            let out = match ev.r#type.as_str() {
                                "ADDED" | "MODIFIED" => Some(Event::Apply(ev.object)),
                                "DELETED" => Some(Event::Delete(ev.object)),
                                _ => None, // BOOKMARK: only the version moves on.
                            };
                            let next = State::Watching {
                                resource_version,
                                stream,
                            };
                            match out {
                                Some(e) => return Some((Ok(e), (next, api, config, backoff))),
                                None => state = next,
                            }
                        }
                    },
                }
            }
        },
    )
}

/// Every object (page by page, at one revision) and the list's resourceVersion.
async fn list_all<K: Resource>(api: &Api<K>, config: &Config) -> Result<(Vec<K>, String)> {
    let mut params = ListParams {
        label_selector: config.label_selector.clone(),
        field_selector: config.field_selector.clone(),
        limit: config.page_size,
        ..Default::default()
    };
    let mut items = Vec::new();
    loop {
        let page = api.list(&params).await?;
        items.extend(page.items);
        match page.metadata.r#continue.filter(|c| !c.is_empty()) {
            Some(c) => params.continue_token = Some(c),
            None => {
                let rv = page
                    .metadata
                    .resource_version
                    .ok_or_else(|| Error::Decode("a list without a resourceVersion".into()))?;
                return Ok((items, rv));
            }
        }
    }
}
