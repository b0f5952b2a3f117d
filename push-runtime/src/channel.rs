//! The contract between `#[push_channel]` and the runtime.
//!
//! The attribute implements these two traits for the user's enum and for the
//! fieldless companion enum it generates; everything else is generic code in
//! this crate that works on any `C: Channel`.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::fmt::Debug;
use std::hash::Hash;

/// An enum of events that can be pushed to clients.
///
/// Implemented by `#[push_channel]`; implementing it by hand is possible but
/// the wire names must then agree with what `serde` produces for each variant.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a push channel",
    note = "annotate the enum with `#[push_runtime::push_channel]` and derive `Clone`, `Serialize` and `Deserialize`"
)]
pub trait Channel: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    /// The fieldless companion enum naming each variant (e.g. `ChatEventKind`).
    type Kind: EventKind;

    /// The base path under which the channel's routes are mounted, e.g. `/chat`.
    ///
    /// Always starts with `/` and never ends with one.
    const PATH: &'static str;

    /// How serde writes the events, for the browser client's TypeScript
    /// declarations (`{base}/client.d.ts`). `#[push_channel]` fills it in; a
    /// hand-written impl may leave it `None`, and payloads are then `unknown`.
    const TYPESCRIPT: Option<&'static crate::browser::typescript::EnumShape> = None;

    /// The kind of this event.
    fn kind(&self) -> Self::Kind;

    /// The wire name of this event (the serde name of its variant).
    fn event_name(&self) -> &'static str {
        self.kind().name()
    }
}

/// The fieldless companion of a [`Channel`] enum: one value per variant.
///
/// Used to filter subscriptions by event kind in a typed way.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not the event-kind enum of a push channel",
    note = "`#[push_channel]` generates it as `<YourEnum>Kind`"
)]
pub trait EventKind: Copy + Eq + Hash + Debug + Send + Sync + 'static {
    /// Every kind, in declaration order.
    const ALL: &'static [Self];

    /// Every wire name, in declaration order (the same order as [`EventKind::ALL`]).
    const NAMES: &'static [&'static str];

    /// The wire name of this kind.
    fn name(self) -> &'static str;

    /// The position of this kind in [`EventKind::ALL`].
    fn index(self) -> usize;

    /// The kind with this wire name, if any.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMES
            .iter()
            .position(|candidate| *candidate == name)
            .and_then(|index| Self::ALL.get(index).copied())
    }
}
