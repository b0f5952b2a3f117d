//! The generated code: the companion enum, the two trait impls and the
//! inherent `router`/`client` constructors. Everything else is generic code
//! in push-runtime.

use crate::model::{ChannelEnum, Shape, Tagging};
use proc_macro2::{Group, Literal, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::{Ident, LitStr};

/// What the options resolved to.
pub(crate) struct Settings {
    pub(crate) path: LitStr,
    pub(crate) runtime: syn::Path,
    pub(crate) kind: Ident,
}

/// The items generated next to the user's enum (which is not included).
pub(crate) fn render(channel: &ChannelEnum, settings: &Settings) -> TokenStream {
    let kind_enum = kind_enum(channel, settings);
    let event_kind_impl = event_kind_impl(channel, settings);
    let channel_impl = channel_impl(channel, settings);
    let constructors = constructors(channel, settings);
    quote! {
        #kind_enum
        const _: () = {
            #event_kind_impl
            #channel_impl
        };
        #constructors
    }
}

fn kind_enum(channel: &ChannelEnum, settings: &Settings) -> TokenStream {
    let vis = &channel.original.vis;
    let ident = channel.ident();
    let kind = &settings.kind;
    let doc = format!(" The kinds of [`{ident}`] events, one per variant, for typed filters.");
    let variants = channel.variants.iter().map(|variant| {
        let name = &variant.ident;
        let doc = format!(" [`{ident}::{name}`], sent as `{}`.", variant.wire_name);
        quote!(#[doc = #doc] #name,)
    });
    quote! {
        #[doc = #doc]
        #[derive(
            ::core::clone::Clone,
            ::core::marker::Copy,
            ::core::fmt::Debug,
            ::core::cmp::PartialEq,
            ::core::cmp::Eq,
            ::core::hash::Hash
        )]
        #vis enum #kind {
            #(#variants)*
        }
    }
}

fn event_kind_impl(channel: &ChannelEnum, settings: &Settings) -> TokenStream {
    let Settings { runtime, kind, .. } = settings;
    let idents: Vec<&Ident> = channel
        .variants
        .iter()
        .map(|variant| &variant.ident)
        .collect();
    let names: Vec<&str> = channel
        .variants
        .iter()
        .map(|variant| variant.wire_name.as_str())
        .collect();
    quote! {
        #[automatically_derived]
        impl #runtime::__private::EventKind for #kind {
            const ALL: &'static [Self] = &[#(Self::#idents),*];
            const NAMES: &'static [&'static str] = &[#(#names),*];
            fn name(self) -> &'static str {
                match self {
                    #(Self::#idents => #names,)*
                }
            }
            fn index(self) -> usize {
                self as usize
            }
        }
    }
}

/// Spanned at the enum's name: an enum that misses `Serialize`, `Clone`, …
/// is the user's mistake and is reported there.
fn channel_impl(channel: &ChannelEnum, settings: &Settings) -> TokenStream {
    let Settings {
        path,
        runtime,
        kind,
    } = settings;
    let ident = channel.ident();
    let arms = channel.variants.iter().map(|variant| {
        let name = &variant.ident;
        let pattern = match variant.shape {
            Shape::Unit => quote!(Self::#name),
            Shape::Tuple => quote!(Self::#name(..)),
            Shape::Struct => quote!(Self::#name { .. }),
        };
        quote!(#pattern => #kind::#name,)
    });
    let typescript = typescript_shape(channel, runtime);
    quote_spanned! {ident.span()=>
        #[automatically_derived]
        impl #runtime::__private::Channel for #ident {
            type Kind = #kind;
            const PATH: &'static str = #path;
            const TYPESCRIPT: ::core::option::Option<&'static #runtime::__private::EnumShape> =
                #typescript;
            fn kind(&self) -> #kind {
                match self {
                    #(#arms)*
                }
            }
        }
    }
}

/// The enum as data for the TypeScript declarations: each field's type is a
/// `TsType` function, spanned at the type so a type without one errors there.
///
/// Kept thin, as it grows with every field of every variant: the runtime
/// path is bound once, the fields of all struct variants are one array (the
/// types of all tuple variants another), each variant is one call naming its
/// range of it, and the variants are an array of their own (a shallow one,
/// so that each call fits on one line of formatted code).
fn typescript_shape(channel: &ChannelEnum, runtime: &syn::Path) -> TokenStream {
    let ident = channel.ident();
    let name = ident.to_string();
    let tagging = match &channel.tagging {
        Tagging::External => quote!(External),
        Tagging::Internal { tag } => quote!(Internal { tag: #tag }),
        Tagging::Adjacent { tag, content } => quote!(Adjacent { tag: #tag, content: #content }),
        Tagging::Untagged => quote!(Untagged),
    };
    // The arrays are consts nested in the `TYPESCRIPT` const, where `Self`
    // cannot be named: it becomes the enum's name.
    let ty_fn = |ty: &syn::Type| {
        let ty = replace_self(ty.to_token_stream(), ident);
        quote_spanned!(syn::spanned::Spanned::span(&ty)=> <#ty as __p::TsType>::ts_type)
    };
    let mut fields = Vec::new();
    let mut types = Vec::new();
    let variants: Vec<TokenStream> = channel
        .variants
        .iter()
        .map(|variant| {
            let wire_name = &variant.wire_name;
            let described = match variant.shape {
                Shape::Unit => quote!(__p::unit_variant(#wire_name)),
                // serde writes a newtype variant whose field is skipped as a unit.
                Shape::Tuple if variant.arity == 1 && variant.fields.is_empty() => {
                    quote!(__p::unit_variant(#wire_name))
                }
                Shape::Tuple => {
                    let start = Literal::usize_unsuffixed(types.len());
                    match variant.fields.as_slice() {
                        // A tuple variant left with one field is still an array.
                        [single] if variant.arity > 1 => {
                            let ty = &single.ty;
                            let span = syn::spanned::Spanned::span(ty);
                            let one_tuple: syn::Type = syn::parse_quote_spanned!(span=> (#ty,));
                            types.push(ty_fn(&one_tuple));
                        }
                        serialized => {
                            types.extend(serialized.iter().map(|field| ty_fn(&field.ty)));
                        }
                    }
                    let end = Literal::usize_unsuffixed(types.len());
                    quote!(__p::tuple_variant(#wire_name, __PUSH_TYPES, #start, #end))
                }
                Shape::Struct => {
                    let start = Literal::usize_unsuffixed(fields.len());
                    fields.extend(variant.fields.iter().map(|field| {
                        let json_name = &field.json_name;
                        let ty = ty_fn(&field.ty);
                        let flatten = field.flatten;
                        if field.skip_serializing_if.is_some() {
                            quote!(__p::optional_field(#json_name, #ty, #flatten))
                        } else {
                            quote!(__p::field(#json_name, #ty, #flatten))
                        }
                    }));
                    let end = Literal::usize_unsuffixed(fields.len());
                    quote!(__p::struct_variant(#wire_name, __PUSH_FIELDS, #start, #end))
                }
            };
            if variant.untagged {
                quote!(__p::untagged(#described))
            } else {
                described
            }
        })
        .collect();
    // Only the arrays some variant uses: an unused const would warn.
    let fields =
        (!fields.is_empty()).then(|| quote!(const __PUSH_FIELDS: &[__p::Field] = &[#(#fields),*];));
    let types =
        (!types.is_empty()).then(|| quote!(const __PUSH_TYPES: &[__p::TypeFn] = &[#(#types),*];));
    quote! {
        {
            use #runtime::__private as __p;
            #fields
            #types
            const __PUSH_VARIANTS: &[__p::Variant] = &[#(#variants),*];
            ::core::option::Option::Some(&__p::EnumShape {
                name: #name,
                tagging: __p::Tagging::#tagging,
                variants: __PUSH_VARIANTS,
            })
        }
    }
}

/// `tokens` with every `Self` replaced by `ident` (spanned at the `Self`).
fn replace_self(tokens: TokenStream, ident: &Ident) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Ident(word) if word == "Self" => {
                let mut name = ident.clone();
                name.set_span(word.span());
                TokenTree::Ident(name)
            }
            TokenTree::Group(group) => {
                let mut replaced =
                    Group::new(group.delimiter(), replace_self(group.stream(), ident));
                replaced.set_span(group.span());
                TokenTree::Group(replaced)
            }
            token => token,
        })
        .collect()
}

fn constructors(channel: &ChannelEnum, settings: &Settings) -> TokenStream {
    let Settings { path, runtime, .. } = settings;
    let vis = &channel.original.vis;
    let ident = channel.ident();
    // `$vis:vis` cannot match nothing at the end of a macro call: a private
    // enum passes the equivalent `pub(self)`.
    let client_vis = match vis {
        syn::Visibility::Inherited => quote!(pub(self)),
        vis => quote!(#vis),
    };
    let doc = format!(
        " The axum routes of this channel (`{}/{{topic}}/sse`, `{}/{{topic}}/ws`, …), serving the topics of `hub` with default settings, ready to `merge` or `nest` into an app with any state `S`.",
        path.value(),
        path.value()
    );
    quote! {
        impl #ident {
            #[doc = #doc]
            #vis fn router<S>(hub: &#runtime::__private::Hub<Self>) -> #runtime::__private::Router<S>
            where
                S: ::core::clone::Clone + ::core::marker::Send + ::core::marker::Sync + 'static,
            {
                #runtime::__private::router(hub)
            }
            /// The TypeScript declarations of this channel's browser client, as
            /// served at `{base}/client.d.ts`: one payload type per wire name and
            /// the typed `subscribe` API. Write it into a front-end build.
            #vis fn typescript() -> #runtime::__private::String {
                #runtime::__private::typescript::<Self>()
            }
            #runtime::__private::client_constructor!(#client_vis);
        }
    }
}
