//! The result of running a plugin: [`Status`] with upstream's codes.

use std::fmt;

/// What a plugin's answer means to the framework.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Code {
    /// The plugin ran and the pod may go on.
    Success,
    /// An internal error: the pod is retried with backoff.
    Error,
    /// The pod does not fit now, but preemption may help.
    Unschedulable,
    /// The pod does not fit, and preempting pods on this node would not help.
    UnschedulableAndUnresolvable,
    /// Permit: the pod waits for an allow or reject.
    Wait,
    /// The plugin has nothing to do for this pod (PreFilter, PreScore, Bind).
    Skip,
    /// The pod waits for something outside the scheduler (treated as unschedulable).
    Pending,
}

/// A plugin's verdict with its reasons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// The code.
    pub code: Code,
    /// Human-readable reasons, aggregated into FailedScheduling messages.
    pub reasons: Vec<String>,
    /// The plugin that returned this status (set by the framework).
    pub plugin: String,
}

impl Default for Status {
    fn default() -> Self {
        Status::success()
    }
}

impl Status {
    /// Success.
    pub fn success() -> Self {
        Status {
            code: Code::Success,
            reasons: Vec::new(),
            plugin: String::new(),
        }
    }

    /// A status with a code and one reason.
    pub fn new(code: Code, reason: impl Into<String>) -> Self {
        Status {
            code,
            reasons: vec![reason.into()],
            plugin: String::new(),
        }
    }

    /// Unschedulable, resolvable by preemption.
    pub fn unschedulable(reason: impl Into<String>) -> Self {
        Status::new(Code::Unschedulable, reason)
    }

    /// Unschedulable, not resolvable by preemption on this node.
    pub fn unresolvable(reason: impl Into<String>) -> Self {
        Status::new(Code::UnschedulableAndUnresolvable, reason)
    }

    /// An internal error.
    pub fn error(reason: impl Into<String>) -> Self {
        Status::new(Code::Error, reason)
    }

    /// Skip.
    pub fn skip() -> Self {
        Status {
            code: Code::Skip,
            ..Status::success()
        }
    }

    /// Whether the code is Success.
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }

    /// Whether the code is Skip.
    pub fn is_skip(&self) -> bool {
        self.code == Code::Skip
    }

    /// Whether the pod was rejected (Unschedulable, UnschedulableAndUnresolvable or Pending).
    pub fn is_rejected(&self) -> bool {
        matches!(
            self.code,
            Code::Unschedulable | Code::UnschedulableAndUnresolvable | Code::Pending
        )
    }

    /// Records which plugin produced this status.
    pub fn with_plugin(mut self, plugin: &str) -> Self {
        if self.plugin.is_empty() {
            self.plugin = plugin.to_string();
        }
        self
    }

    /// The reasons joined with ", ".
    pub fn message(&self) -> String {
        self.reasons.join(", ")
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.plugin.is_empty() {
            write!(f, "{:?}: {}", self.code, self.message())
        } else {
            write!(f, "{:?} ({}): {}", self.code, self.plugin, self.message())
        }
    }
}
