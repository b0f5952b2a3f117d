//! The `#[push_channel]` attribute. Use it through `push_runtime::push_channel`.
use proc_macro::TokenStream;

/// Placeholder until the macro lands.
#[proc_macro_attribute]
pub fn push_channel(_attr: TokenStream, item: TokenStream) -> TokenStream {
    item
}
