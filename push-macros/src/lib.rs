//! The `#[push_channel]` attribute of the push framework.
//!
//! Use it through [`push_runtime::push_channel`](https://docs.rs/push-runtime/latest/push_runtime/attr.push_channel.html),
//! where every option, every generated item and the equivalent hand-written
//! code are documented. The stages of the expansion live in one module each:
//! `attr` (the attribute's options), `model` (the parsed enum and its serde
//! names), `case` (serde's rename rules), `validate`, `render`, with `errors`
//! collecting every spanned error along the way.

mod attr;
mod case;
mod errors;
mod expand;
mod model;
mod render;
mod validate;

#[cfg(test)]
mod expansion_tests;

#[cfg(test)]
mod expansion_size;

use proc_macro::TokenStream;

// Documented where push-runtime re-exports it (`src/docs/push_channel.md`),
// which rustdoc shows followed by any doc written here: so none is.
#[proc_macro_attribute]
pub fn push_channel(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::expand(attr.into(), item.into()).into()
}
