//! The typed Rust client.
use std::marker::PhantomData;

/// A typed client.
#[derive(Debug)]
pub struct Client<C> {
    base: String,
    channel: PhantomData<fn() -> C>,
}

/// Client errors.
#[derive(Debug, thiserror::Error)]
#[error("client error")]
pub struct ClientError;

impl<C> Client<C> {
    /// A client.
    pub fn new(base_url: &str) -> Result<Self, ClientError> {
        Ok(Self {
            base: base_url.to_owned(),
            channel: PhantomData,
        })
    }
}
