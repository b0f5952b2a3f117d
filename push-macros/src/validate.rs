//! The rules a channel must follow, checked before anything is generated.

use crate::errors::Errors;
use crate::model::{ChannelEnum, Shape};
use std::collections::HashMap;
use syn::punctuated::Punctuated;
use syn::{ItemEnum, LitStr, Meta, Token};

/// The longest wire name, in bytes.
pub(crate) const MAX_WIRE_NAME_LEN: usize = 128;

/// The prefix of control events, which no channel event may use.
pub(crate) const RESERVED_PREFIX: &str = "push.";

/// Checks the enum and its base path, recording every problem in `errors`.
///
/// `path_is_default` words the path errors for a path the user did not write.
pub(crate) fn validate(
    channel: &ChannelEnum,
    path: &LitStr,
    path_is_default: bool,
    errors: &mut Errors,
) {
    let item = &channel.original;
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &item.generics,
            "`#[push_channel]` does not support generic enums (type, lifetime or const parameters): a channel's events must be one concrete type",
        ));
    }
    if channel.variants.is_empty() {
        errors.at(
            item.ident.span(),
            "`#[push_channel]` needs an enum with at least one variant: a channel without events could never push anything",
        );
    }
    if let Err(rule) = check_path(&path.value()) {
        let message = if path_is_default {
            format!(
                "the default path `{}` made from the enum's name is invalid: {rule}; choose one with `#[push_channel(path = \"/...\")]`",
                path.value()
            )
        } else {
            format!("invalid path `{}`: {rule}", path.value())
        };
        errors.at(path.span(), message);
    }
    reject_conditional_serde(item, errors);
    reject_optional_tuple_elements(channel, errors);
    let mut seen: HashMap<&str, &syn::Ident> = HashMap::new();
    for variant in &channel.variants {
        if let Err(rule) = check_wire_name(&variant.wire_name) {
            errors.at(
                variant.wire_span,
                format!(
                    "invalid wire name `{}` of variant `{}`: {rule}",
                    variant.wire_name, variant.ident
                ),
            );
        }
        if let Some(first) = seen.get(variant.wire_name.as_str()) {
            errors.at(
                variant.wire_span,
                format!(
                    "duplicate wire name `{}`: variant `{}` already serializes under this name, so clients could not tell the two apart",
                    variant.wire_name, first
                ),
            );
        } else {
            seen.insert(&variant.wire_name, &variant.ident);
        }
    }
}

/// Why a `serde` attribute inside a variant's or field's `cfg_attr` is
/// refused, and what to write.
pub(crate) const CONDITIONAL_SERDE: &str = "`#[push_channel]` cannot honour a `serde` attribute inside `cfg_attr` on a variant or a field: the compiler resolves it only after this macro has fixed the wire names and the TypeScript declarations, which could then silently differ from what serde writes; write the `#[serde(...)]` attribute without `cfg_attr`, or declare the whole enum twice, each under its own `#[cfg(...)]`";

/// Every `serde` attribute inside `cfg_attr` (however nested) on a variant or
/// a field, spanned at its `serde`. The enum's own `cfg_attr`s need no check:
/// the compiler resolves them before it runs the macro, which then reads the
/// serde attributes that apply. `cfg_attr` without serde is fine.
fn reject_conditional_serde(item: &ItemEnum, errors: &mut Errors) {
    let attrs = item.variants.iter().flat_map(|variant| {
        variant
            .attrs
            .iter()
            .chain(variant.fields.iter().flat_map(|field| &field.attrs))
    });
    for attr in attrs {
        if let Meta::List(list) = &attr.meta {
            conditional_serde(list, errors);
        }
    }
}

/// The serde attributes under one `cfg_attr(<predicate>, <attr>, …)`; one the
/// compiler would reject anyway is left to it.
fn conditional_serde(list: &syn::MetaList, errors: &mut Errors) {
    if !list.path.is_ident("cfg_attr") {
        return;
    }
    let parser = Punctuated::<Meta, Token![,]>::parse_terminated;
    let Ok(metas) = list.parse_args_with(parser) else {
        return;
    };
    for meta in metas.iter().skip(1) {
        if meta.path().is_ident("serde") {
            errors.push(syn::Error::new_spanned(meta.path(), CONDITIONAL_SERDE));
        } else if let Meta::List(nested) = meta {
            conditional_serde(nested, errors);
        }
    }
}

/// `skip_serializing_if` in a tuple variant of more than one field: serde
/// drops the element and shifts the ones after it, which no TypeScript tuple
/// describes. (A newtype variant ignores it, as serde does.)
fn reject_optional_tuple_elements(channel: &ChannelEnum, errors: &mut Errors) {
    for variant in &channel.variants {
        if !matches!(variant.shape, Shape::Tuple) || variant.arity < 2 {
            continue;
        }
        for literal in variant
            .fields
            .iter()
            .filter_map(|field| field.skip_serializing_if.as_ref())
        {
            errors.at(
                literal.span(),
                format!(
                    "`skip_serializing_if` in tuple variant `{}` cannot be declared in TypeScript: serde leaves the element out of the array and shifts the ones after it; make `{}` a struct variant, whose field is then declared optional (`name?: T`)",
                    variant.ident, variant.ident
                ),
            );
        }
    }
}

/// Checks a channel's base path; the error says which rule failed.
pub(crate) fn check_path(path: &str) -> Result<(), String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err("a path must start with `/`".into());
    };
    if rest.is_empty() {
        return Err(
            "a path must not be just `/`: the channel's routes need a base of their own".into(),
        );
    }
    if rest.ends_with('/') {
        return Err("a path must not end with `/`".into());
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return Err("a path must not have empty segments (`//`)".into());
        }
        if segment == "." || segment == ".." {
            return Err(format!("a path must not have `{segment}` segments"));
        }
        if let Some(bad) = segment.chars().find(|ch| !is_path_char(*ch)) {
            return Err(format!(
                "{bad:?} is not allowed in a path: segments are made of ASCII letters, digits, `-`, `_`, `.` and `~`"
            ));
        }
    }
    Ok(())
}

fn is_path_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | '~')
}

/// Checks a wire name (a valid SSE event name, see docs/protocol.md); the
/// error says which rule failed.
pub(crate) fn check_wire_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a wire name must not be empty".into());
    }
    if name.len() > MAX_WIRE_NAME_LEN {
        return Err(format!(
            "a wire name must be at most {MAX_WIRE_NAME_LEN} bytes long, this one has {}",
            name.len()
        ));
    }
    if let Some(bad) = name.chars().find(|ch| !is_wire_char(*ch)) {
        return Err(format!(
            "{bad:?} is not allowed in a wire name: use ASCII letters, digits, `_`, `-`, `.` and `:`"
        ));
    }
    if name.starts_with(RESERVED_PREFIX) {
        return Err(format!(
            "wire names starting with `{RESERVED_PREFIX}` are reserved for control events"
        ));
    }
    Ok(())
}

fn is_wire_char(ch: char) -> bool {
    ch.is_ascii_alphanumeric() || matches!(ch, '_' | '-' | '.' | ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path_error(path: &str) -> String {
        check_path(path).expect_err(path)
    }

    fn wire_error(name: &str) -> String {
        check_wire_name(name).expect_err(name)
    }

    #[test]
    fn valid_paths() {
        for path in [
            "/chat",
            "/chat-event",
            "/api/v1/chat",
            "/a.b_c~d-e",
            "/..x",
            "/x.",
            "/0",
        ] {
            assert_eq!(check_path(path), Ok(()), "{path}");
        }
    }

    #[test]
    fn each_path_rule_says_which_failed() {
        assert!(path_error("chat").contains("start with `/`"));
        assert!(path_error("").contains("start with `/`"));
        assert!(path_error("/").contains("not be just `/`"));
        assert!(path_error("/chat/").contains("not end with `/`"));
        assert!(path_error("/a//b").contains("empty segments"));
        assert!(path_error("/a/./b").contains("`.` segments"));
        assert!(path_error("/a/..").contains("`..` segments"));
        assert!(path_error("/chat room").contains("' ' is not allowed"));
        assert!(path_error("/{topic}").contains("'{' is not allowed"));
        assert!(path_error("/café").contains("'é' is not allowed"));
        assert!(path_error("/a?b").contains("'?' is not allowed"));
    }

    #[test]
    fn valid_wire_names() {
        for name in [
            "message",
            "Joined",
            "user:joined",
            "a.b-c_d",
            "push",
            "pushed.x",
            "x.push.y",
            "0",
        ] {
            assert_eq!(check_wire_name(name), Ok(()), "{name}");
        }
        assert_eq!(check_wire_name(&"a".repeat(128)), Ok(()));
    }

    #[test]
    fn each_wire_name_rule_says_which_failed() {
        assert!(wire_error("").contains("not be empty"));
        assert!(wire_error(&"a".repeat(129)).contains("at most 128 bytes"));
        assert!(wire_error("new message").contains("' ' is not allowed"));
        assert!(wire_error("a\nb").contains("'\\n' is not allowed"));
        assert!(wire_error("naïve").contains("'ï' is not allowed"));
        assert!(wire_error("push.ready").contains("reserved for control events"));
        assert!(wire_error("push.").contains("reserved for control events"));
    }
}
