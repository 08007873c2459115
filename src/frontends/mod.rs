//! Front-ends that speak other wire formats, translated to and from chat completions.

pub mod http;
pub mod messages;
pub mod responses;
