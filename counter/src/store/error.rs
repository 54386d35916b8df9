//! [`StoreError`]: why a store could not answer, and whether trying again later
//! may help.

use std::fmt;
use std::time::Duration;

use ::redis::{RedisError, RetryMethod};

/// A failed store call.
#[derive(Debug, Clone)]
pub enum StoreError {
    /// No answer within the configured time.
    Timeout(Duration),
    /// Redis could not be reached or the connection broke.
    Unreachable(String),
    /// Redis answered with an error.
    Server {
        /// Redis's message.
        message: String,
        /// Whether Redis itself marks the condition as passing (cluster down,
        /// loading, try again).
        transient: bool,
    },
    /// Redis answered something the script never returns.
    BadReply(String),
    /// The store was configured wrongly (bad URL).
    Config(String),
}

impl StoreError {
    /// Whether the same call may succeed later without anyone changing
    /// anything: timeouts, connection loss, cluster reconfiguration.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Timeout(_) | StoreError::Unreachable(_) => true,
            StoreError::Server { transient, .. } => *transient,
            StoreError::BadReply(_) | StoreError::Config(_) => false,
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Timeout(after) => {
                write!(f, "Redis did not answer within {} ms", after.as_millis())
            }
            StoreError::Unreachable(why) => write!(f, "cannot reach Redis: {why}"),
            StoreError::Server { message, .. } => {
                write!(f, "Redis replied with an error: {message}")
            }
            StoreError::BadReply(what) => write!(f, "unexpected reply from Redis: {what}"),
            StoreError::Config(why) => write!(f, "Redis configuration: {why}"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<RedisError> for StoreError {
    fn from(err: RedisError) -> Self {
        if err.is_timeout() {
            return StoreError::Unreachable(format!("timed out ({err})"));
        }
        if err.is_io_error() || err.is_connection_dropped() || err.is_connection_refusal() {
            return StoreError::Unreachable(err.to_string());
        }
        match err.kind() {
            ::redis::ErrorKind::Server(_) | ::redis::ErrorKind::Extension => StoreError::Server {
                message: err.to_string(),
                transient: !matches!(err.retry_method(), RetryMethod::NoRetry),
            },
            ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
                StoreError::BadReply(err.to_string())
            }
            ::redis::ErrorKind::InvalidClientConfig => StoreError::Config(err.to_string()),
            _ => StoreError::Unreachable(err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transience_and_messages() {
        let t = StoreError::Timeout(Duration::from_millis(40));
        assert!(t.is_transient());
        assert_eq!(t.to_string(), "Redis did not answer within 40 ms");
        assert!(!StoreError::BadReply("x".into()).is_transient());
        let refused = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(StoreError::from(refused).is_transient());
    }
}
