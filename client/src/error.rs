//! Client errors: the server's `Status` when it answered with one, else what failed locally.

use bosun_api_types::meta::v1::Status;

/// What went wrong with a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server refused the request; its `Status` says why (code, reason, message, details).
    #[error("{} ({}): {}", .0.reason.as_deref().unwrap_or("Unknown"), .0.code.unwrap_or(0), .0.message.as_deref().unwrap_or(""))]
    Api(Box<Status>),
    /// The server answered an error without a `Status` body.
    #[error("HTTP {code}: {body}")]
    Http {
        /// HTTP status code.
        code: u16,
        /// The body, as text.
        body: String,
    },
    /// The request could not be made or the response not read (connection, I/O).
    #[error("transport: {0}")]
    Transport(String),
    /// The response could not be decoded.
    #[error("decoding the response: {0}")]
    Decode(String),
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// A request could not be built (a bad name or parameter).
    #[error("building the request: {0}")]
    Request(String),
}

impl Error {
    /// The server's `Status`, if it sent one.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Error::Api(s) => Some(s),
            _ => None,
        }
    }

    /// The HTTP code the server answered, if it answered.
    pub fn code(&self) -> Option<u16> {
        match self {
            Error::Api(s) => s.code.and_then(|c| u16::try_from(c).ok()),
            Error::Http { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// `Status.reason` (`NotFound`, `Conflict`, `Expired`, …), if the server sent one.
    pub fn reason(&self) -> Option<&str> {
        self.status().and_then(|s| s.reason.as_deref())
    }

    /// 404 NotFound.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(404)
    }

    /// 409 Conflict (a stale resourceVersion) or AlreadyExists.
    pub fn is_conflict(&self) -> bool {
        self.code() == Some(409)
    }

    /// 410 Gone / Expired: the resourceVersion is too old; list again.
    pub fn is_gone(&self) -> bool {
        self.code() == Some(410) || matches!(self.reason(), Some("Expired") | Some("Gone"))
    }
}

/// Result of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
