//! The whole expansion: parse, model, validate, render; or, on any error, the
//! user's enum unchanged followed by every error.

use crate::attr::{self, Options};
use crate::errors::Errors;
use crate::model::ChannelEnum;
use crate::render::{self, Settings};
use crate::validate;
use proc_macro2::TokenStream;
use quote::quote;

/// Expands `#[push_channel(<attr>)] <item>`.
pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let options = Options::parse(attr, &mut errors);
    let channel = match syn::parse2(item.clone()) {
        Ok(parsed) => ChannelEnum::from_item(parsed, &mut errors),
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let generated = channel.and_then(|channel| {
        let ident = channel.ident();
        let path = options
            .path
            .clone()
            .unwrap_or_else(|| attr::default_path(ident));
        validate::validate(&channel, &path, options.path.is_none(), &mut errors);
        let settings = Settings {
            path,
            runtime: options.runtime_path(),
            kind: options
                .kind
                .clone()
                .unwrap_or_else(|| attr::default_kind(ident)),
        };
        errors
            .is_empty()
            .then(|| render::render(&channel, &settings))
    });
    match (generated, errors.finish()) {
        (Some(generated), None) => quote!(#item #generated),
        (_, Some(error)) => {
            let error = error.to_compile_error();
            quote!(#item #error)
        }
        // Not reachable: no generated code means an error was recorded.
        (None, None) => item,
    }
}
