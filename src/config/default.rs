//! The commented default config written on first run (and used by `serve` when no file
//! exists and none can be written). Every provider here speaks the OpenAI chat format.

/// The default config file, with comments that explain every setting.
pub const DEFAULT_CONFIG: &str = include_str!("../../assets/default-config.toml");
