//! The options of `#[push_channel(...)]`: `path`, `crate` and `kind`.

use crate::errors::Errors;
use proc_macro2::{TokenStream, TokenTree};
use syn::meta::ParseNestedMeta;
use syn::parse::Parser;
use syn::{Expr, ExprLit, Ident, Lit, LitStr, Token};

/// The options as written, each keeping the literal it came from for spans.
#[derive(Default)]
pub(crate) struct Options {
    /// `path = "/chat"`: the channel's base path.
    pub(crate) path: Option<LitStr>,
    /// `crate = "::my_push"`: where push-runtime is, for renamed dependencies.
    pub(crate) krate: Option<syn::Path>,
    /// `kind = "ChatKind"`: the name of the companion enum.
    pub(crate) kind: Option<Ident>,
}

const VALID_OPTIONS: &str = "valid options are `path`, `crate` and `kind`";

impl Options {
    /// Parses the attribute's arguments, recording every problem in `errors`
    /// and keeping the options that were fine.
    pub(crate) fn parse(attr: TokenStream, errors: &mut Errors) -> Self {
        let mut options = Self::default();
        let parser = syn::meta::parser(|meta| {
            options.parse_one(&meta, errors);
            skip_value(&meta)
        });
        if let Err(error) = parser.parse2(attr) {
            errors.push(error);
        }
        options
    }

    fn parse_one(&mut self, meta: &ParseNestedMeta, errors: &mut Errors) {
        let key = &meta.path;
        let name = if key.is_ident("path") {
            "path"
        } else if key.is_ident("crate") {
            "crate"
        } else if key.is_ident("kind") {
            "kind"
        } else {
            let shown = quote::ToTokens::to_token_stream(key)
                .to_string()
                .replace(' ', "");
            errors.push(syn::Error::new_spanned(
                key,
                format!("unknown option `{shown}`; {VALID_OPTIONS}"),
            ));
            return;
        };
        let already_set = match name {
            "path" => self.path.is_some(),
            "crate" => self.krate.is_some(),
            _ => self.kind.is_some(),
        };
        if already_set {
            errors.push(syn::Error::new_spanned(
                key,
                format!("duplicate option `{name}`"),
            ));
            return;
        }
        let Some(literal) = string_value(meta, name, errors) else {
            return;
        };
        match name {
            "path" => self.path = Some(literal),
            "crate" => match literal.parse::<syn::Path>() {
                Ok(path) => self.krate = Some(path),
                Err(_) => errors.at(
                    literal.span(),
                    format!(
                        "`crate` must be a path to push-runtime, e.g. `crate = \"::my_push\"`; `{}` is not a path",
                        literal.value()
                    ),
                ),
            },
            _ => match literal.parse::<Ident>() {
                Ok(kind) => self.kind = Some(kind),
                Err(_) => errors.at(
                    literal.span(),
                    format!(
                        "`kind` must be the name of the companion enum, e.g. `kind = \"ChatKind\"`; `{}` is not an identifier",
                        literal.value()
                    ),
                ),
            },
        }
    }

    /// The path to push-runtime in generated code.
    pub(crate) fn runtime_path(&self) -> syn::Path {
        self.krate
            .clone()
            .unwrap_or_else(|| syn::parse_quote!(::push_runtime))
    }
}

/// The string literal after `name =`, or an error spanned where it is missing.
fn string_value(meta: &ParseNestedMeta, name: &str, errors: &mut Errors) -> Option<LitStr> {
    if !meta.input.peek(Token![=]) {
        errors.push(syn::Error::new_spanned(
            &meta.path,
            format!("expected `{name} = \"...\"`"),
        ));
        return None;
    }
    let value = match meta.value().and_then(|value| value.parse::<Expr>()) {
        Ok(value) => value,
        Err(error) => {
            errors.push(error);
            return None;
        }
    };
    match value {
        Expr::Lit(ExprLit {
            lit: Lit::Str(literal),
            ..
        }) => Some(literal),
        other => {
            errors.push(syn::Error::new_spanned(
                other,
                format!("the value of `{name}` must be a string literal, e.g. `{name} = \"...\"`"),
            ));
            None
        }
    }
}

/// Skips what is left of a rejected or uninteresting key (up to the next
/// comma) so the keys after it are still read.
pub(crate) fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    while !meta.input.is_empty() && !meta.input.peek(Token![,]) {
        meta.input.parse::<TokenTree>()?;
    }
    Ok(())
}

/// The default base path: `/` and the enum's name in kebab-case.
pub(crate) fn default_path(ident: &Ident) -> LitStr {
    use heck::ToKebabCase;
    use syn::ext::IdentExt;
    let name = ident.unraw().to_string().to_kebab_case();
    LitStr::new(&format!("/{name}"), ident.span())
}

/// The default companion enum: the enum's name followed by `Kind`.
pub(crate) fn default_kind(ident: &Ident) -> Ident {
    use syn::ext::IdentExt;
    Ident::new(&format!("{}Kind", ident.unraw()), ident.span())
}
