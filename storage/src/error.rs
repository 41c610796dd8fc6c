//! Storage errors. None of them is the user's fault: they are disk or
//! corruption problems, reported to clients as internal errors.

/// What went wrong while reading or writing the data directory.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The operating system refused an operation.
    #[error("I/O error while {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// sled reported an error.
    #[error("storage engine error while {context}: {message}")]
    Engine { context: String, message: String },
    /// A record on disk does not decode: the data directory is damaged.
    #[error("corrupt record in the data directory: {0}")]
    Corrupt(String),
    /// Data could not be encoded for storage (a bug).
    #[error("cannot encode data for storage: {0}")]
    Encode(String),
}

impl StorageError {
    pub(crate) fn from_sled(e: sled::Error, context: &str) -> Self {
        StorageError::Engine {
            context: context.to_owned(),
            message: e.to_string(),
        }
    }
}

/// Wraps an I/O error with what was being done.
pub(crate) fn io(context: String) -> impl FnOnce(std::io::Error) -> StorageError {
    move |source| StorageError::Io { context, source }
}

/// Result type of the storage crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
