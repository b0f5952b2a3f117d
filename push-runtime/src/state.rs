//! What a channel's routes share, kept below the transports that read it:
//! each route's state is the channel's, plus its own transport's settings
//! ([`RouteState`]), so no transport sees another's configuration.

use crate::auth::Authorize;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::origin::OriginPolicy;
use std::sync::Arc;

/// Everything the checks of every route of one channel need.
pub(crate) struct ChannelState<C> {
    pub(crate) hub: Hub<C>,
    pub(crate) origins: OriginPolicy,
    pub(crate) limits: Limits,
    pub(crate) authorize: Option<Arc<dyn Authorize>>,
}

/// One route's state: the channel's, and the settings of the route's own
/// transport (`SseConfig`, `PollConfig`…).
pub(crate) struct RouteState<C, T> {
    pub(crate) channel: Arc<ChannelState<C>>,
    pub(crate) config: T,
}

impl<C, T> RouteState<C, T> {
    /// The state of a route of `channel` whose transport has these settings.
    pub(crate) fn new(channel: &Arc<ChannelState<C>>, config: T) -> Arc<Self> {
        Arc::new(Self {
            channel: Arc::clone(channel),
            config,
        })
    }
}
