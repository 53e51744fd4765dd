//! One error type for the whole reference. Every variant names what is at fault
//! (file, tensor, config field, token position) so that a user can fix the input.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value that is missing, malformed or inconsistent with another.
    #[error("config field `{field}`: {msg}")]
    Config { field: String, msg: String },

    /// A setting of a run (a generation's `temperature`, `max_new_tokens`, ...) that the
    /// model cannot honour; front ends name it as their own flag.
    #[error("{name}: {msg}")]
    Setting { name: &'static str, msg: String },

    /// A file that cannot be read, parsed or written.
    #[error("{}: {msg}", path.display())]
    File { path: PathBuf, msg: String },

    /// A tensor inside a file that is missing, mis-shaped, of the wrong dtype or corrupt.
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    Tensor { path: PathBuf, tensor: String, msg: String },

    /// A checkpoint whose set of tensors does not match the configuration.
    #[error("checkpoint {}: {msg}", dir.display())]
    Checkpoint { dir: PathBuf, msg: String },

    /// Input data that the model cannot take (out-of-range token, non-finite value, ...).
    #[error("invalid input: {0}")]
    Input(String),

    /// Operands of a backend operation whose shapes do not fit together.
    #[error("shape mismatch in {op}: {msg}")]
    Shape { op: &'static str, msg: String },

    /// A failure inside a backend (device, driver, kernel compilation, ...).
    #[error("backend {backend}: {msg}")]
    Backend { backend: &'static str, msg: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn config(field: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { field: field.into(), msg: msg.into() }
    }
    pub fn setting(name: &'static str, msg: impl Into<String>) -> Self {
        Error::Setting { name, msg: msg.into() }
    }
    pub fn file(path: impl Into<PathBuf>, msg: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), msg: msg.to_string() }
    }
    pub fn tensor(path: impl Into<PathBuf>, tensor: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Tensor { path: path.into(), tensor: tensor.into(), msg: msg.into() }
    }
    pub fn shape(op: &'static str, msg: impl Into<String>) -> Self {
        Error::Shape { op, msg: msg.into() }
    }
}
