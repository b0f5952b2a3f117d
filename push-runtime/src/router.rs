//! The channel's axum routes.

use crate::channel::Channel;
use crate::hub::Hub;
use axum::Router;

/// Builds the routes of one channel.
#[derive(Debug)]
pub struct ChannelRouter<C> {
    hub: Hub<C>,
}

impl<C: Channel> ChannelRouter<C> {
    /// Routes serving `hub`'s topics with default settings.
    pub fn new(hub: Hub<C>) -> Self {
        Self { hub }
    }

    /// The routes, ready to `merge` or `nest` into an app with any state `S`.
    pub fn into_router<S: Clone + Send + Sync + 'static>(self) -> Router<S> {
        let _ = self.hub;
        Router::new()
    }
}
