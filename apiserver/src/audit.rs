//! The audit log: one `audit.k8s.io/v1` `Event` per resource request, at the `Metadata` level
//! (who, what, which object, the outcome; no bodies), as JSON lines in a file, like upstream's
//! `--audit-log-path` with the log backend.
//!
//! A background thread owns the file: requests hand their record over a channel and never wait
//! for the disk. The thread flushes whenever the channel runs empty.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Where audit records go.
pub(crate) struct AuditLog {
    tx: mpsc::Sender<Vec<u8>>,
}

/// What an audit record says about one request.
pub(crate) struct Record<'a> {
    pub(crate) request_uri: &'a str,
    pub(crate) verb: &'a str,
    pub(crate) user: &'a crate::auth::UserInfo,
    pub(crate) source_ip: Option<std::net::IpAddr>,
    pub(crate) user_agent: &'a str,
    pub(crate) group: &'a str,
    pub(crate) version: &'a str,
    pub(crate) resource: &'a str,
    pub(crate) subresource: Option<&'a str>,
    pub(crate) namespace: Option<&'a str>,
    pub(crate) name: Option<&'a str>,
    pub(crate) code: u16,
    pub(crate) received: bosun_api_types::MicroTime,
}

impl AuditLog {
    /// Opens (appending) or creates the log file and starts its writer thread.
    pub(crate) fn open(path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = mpsc::channel::<Vec<u8>>();
        let path: PathBuf = path.to_owned();
        std::thread::Builder::new()
            .name("bosun-audit".into())
            .spawn(move || {
                let mut out = std::io::BufWriter::new(file);
                while let Ok(line) = rx.recv() {
                    let mut ok = out.write_all(&line).is_ok();
                    while let Ok(more) = rx.try_recv() {
                        ok &= out.write_all(&more).is_ok();
                    }
                    if !ok || out.flush().is_err() {
                        tracing::warn!(path = %path.display(), "writing the audit log failed");
                    }
                }
            })?;
        Ok(AuditLog { tx })
    }

    /// Queues one record.
    pub(crate) fn record(&self, r: &Record<'_>) {
        let mut object_ref = serde_json::Map::new();
        let mut put = |k: &str, v: Option<&str>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                object_ref.insert(k.into(), v.into());
            }
        };
        put("resource", Some(r.resource));
        put("namespace", r.namespace);
        put("name", r.name);
        put("apiGroup", Some(r.group));
        put("apiVersion", Some(r.version));
        put("subresource", r.subresource);
        let event = serde_json::json!({
            "kind": "Event",
            "apiVersion": "audit.k8s.io/v1",
            "level": "Metadata",
            "auditID": uuid::Uuid::new_v4().to_string(),
            "stage": "ResponseComplete",
            "requestURI": r.request_uri,
            "verb": r.verb,
            "user": {"username": r.user.name, "groups": r.user.groups},
            "sourceIPs": r.source_ip.map(|ip| vec![ip.to_string()]).unwrap_or_default(),
            "userAgent": r.user_agent,
            "objectRef": object_ref,
            "responseStatus": {"metadata": {}, "code": r.code},
            "requestReceivedTimestamp": r.received,
            "stageTimestamp": bosun_api_types::MicroTime::now(),
        });
        let mut line = serde_json::to_vec(&event).unwrap_or_default();
        line.push(b'\n');
        // The writer thread ends only with the log; a send error means it is gone.
        let _ = self.tx.send(line);
    }
}
