//! The user's enum as the later stages see it: each variant with its wire name
//! and the tokens it came from, so any error can be spanned precisely.

use crate::attr::skip_value;
use crate::case::RenameRule;
use crate::errors::Errors;
use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::{Attribute, Fields, Ident, Item, ItemEnum, LitStr, Token};

/// An enum annotated with `#[push_channel]`.
pub(crate) struct ChannelEnum {
    /// The enum as written.
    pub(crate) original: ItemEnum,
    pub(crate) variants: Vec<Variant>,
    /// serde's representation of the enum.
    pub(crate) tagging: Tagging,
}

/// serde's enum representation (`tag`, `content`, `untagged`).
pub(crate) enum Tagging {
    External,
    Internal { tag: String },
    Adjacent { tag: String, content: String },
    Untagged,
}

/// A field as serde serializes it (skipped fields are left out).
pub(crate) struct Field {
    /// The JSON key; unused when `flatten`.
    pub(crate) json_name: String,
    pub(crate) ty: syn::Type,
    pub(crate) flatten: bool,
    /// The `skip_serializing_if` path: serde may leave the field out.
    pub(crate) skip_serializing_if: Option<LitStr>,
}

/// One variant and the name serde serializes it under.
pub(crate) struct Variant {
    pub(crate) ident: Ident,
    pub(crate) shape: Shape,
    /// The serialized fields, for the TypeScript declarations.
    pub(crate) fields: Vec<Field>,
    /// The number of fields as written, skipped ones included: serde writes
    /// a newtype variant whose field is skipped as a unit variant, but a
    /// tuple variant left with one field as a one-element array.
    pub(crate) arity: usize,
    /// `#[serde(untagged)]` on the variant: written as its content alone.
    pub(crate) untagged: bool,
    pub(crate) wire_name: String,
    /// The `rename` literal if there is one, else the variant's ident.
    pub(crate) wire_span: Span,
}

/// How a variant's fields are matched.
#[derive(Clone, Copy)]
pub(crate) enum Shape {
    Unit,
    Tuple,
    Struct,
}

impl ChannelEnum {
    /// The model of `item`, or `None` (with an error) if it is not an enum.
    pub(crate) fn from_item(item: Item, errors: &mut Errors) -> Option<Self> {
        let original = match item {
            Item::Enum(item) => item,
            Item::Struct(item) => {
                errors.push(not_an_enum(&item.struct_token, "a struct"));
                return None;
            }
            Item::Union(item) => {
                errors.push(not_an_enum(&item.union_token, "a union"));
                return None;
            }
            _ => {
                errors.at(Span::call_site(), "`#[push_channel]` only applies to enums");
                return None;
            }
        };
        let rule = rename_all_rule(&original.attrs, "rename_all", errors);
        let fields_rule = rename_all_rule(&original.attrs, "rename_all_fields", errors);
        let tagging = tagging(&original.attrs);
        let variants = original
            .variants
            .iter()
            .map(|variant| {
                let (wire_name, wire_span) = match variant_rename(&variant.attrs) {
                    Some(rename) => (rename.value(), rename.span()),
                    None => {
                        let name = variant.ident.unraw().to_string();
                        let name = match rule {
                            Some(rule) => rule.apply_to_variant(&name),
                            None => name,
                        };
                        (name, variant.ident.span())
                    }
                };
                let rule = rename_all_rule(&variant.attrs, "rename_all", errors).or(fields_rule);
                Variant {
                    ident: variant.ident.clone(),
                    fields: fields(&variant.fields, rule),
                    arity: variant.fields.len(),
                    untagged: serde_flag(&variant.attrs, "untagged"),
                    shape: match variant.fields {
                        Fields::Unit => Shape::Unit,
                        Fields::Unnamed(_) => Shape::Tuple,
                        Fields::Named(_) => Shape::Struct,
                    },
                    wire_name,
                    wire_span,
                }
            })
            .collect();
        Some(Self {
            original,
            variants,
            tagging,
        })
    }

    pub(crate) fn ident(&self) -> &Ident {
        &self.original.ident
    }
}

fn not_an_enum(keyword: &impl quote::ToTokens, found: &str) -> syn::Error {
    syn::Error::new_spanned(
        keyword,
        format!("`#[push_channel]` only applies to enums, not to {found}"),
    )
}

/// serde's representation, from the enum's attributes.
fn tagging(attrs: &[Attribute]) -> Tagging {
    if serde_flag(attrs, "untagged") {
        return Tagging::Untagged;
    }
    match (serde_key(attrs, "tag"), serde_key(attrs, "content")) {
        (Some(tag), Some(content)) => Tagging::Adjacent {
            tag: tag.value(),
            content: content.value(),
        },
        (Some(tag), None) => Tagging::Internal { tag: tag.value() },
        _ => Tagging::External,
    }
}

/// The serialized fields of a variant, named as serde names them.
fn fields(fields: &Fields, rule: Option<RenameRule>) -> Vec<Field> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, field)| {
            !serde_flag(&field.attrs, "skip") && !serde_flag(&field.attrs, "skip_serializing")
        })
        .map(|(index, field)| {
            let json_name = match (serde_key(&field.attrs, "rename"), &field.ident) {
                (Some(rename), _) => rename.value(),
                (None, Some(ident)) => {
                    let name = ident.unraw().to_string();
                    rule.map_or_else(|| name.clone(), |rule| rule.apply_to_field(&name))
                }
                (None, None) => index.to_string(),
            };
            Field {
                json_name,
                ty: field.ty.clone(),
                flatten: serde_flag(&field.attrs, "flatten"),
                skip_serializing_if: serde_key(&field.attrs, "skip_serializing_if"),
            }
        })
        .collect()
}

/// The `#[serde(<key> = "...")]` (or `<key>(serialize = "...")`) rule of the
/// enum (`rename_all`, `rename_all_fields`) or of a variant (`rename_all`); an
/// unknown rule is an error spanned at its literal.
fn rename_all_rule(attrs: &[Attribute], key: &str, errors: &mut Errors) -> Option<RenameRule> {
    let literal = serde_key(attrs, key)?;
    let rule = RenameRule::from_name(&literal.value());
    if rule.is_none() {
        errors.at(
            literal.span(),
            RenameRule::unknown_message(&literal.value()),
        );
    }
    rule
}

/// A variant's `#[serde(rename = "...")]` (or `rename(serialize = "...")`).
fn variant_rename(attrs: &[Attribute]) -> Option<LitStr> {
    serde_key(attrs, "rename")
}

/// Whether a bare `#[serde(<key>)]` (e.g. `untagged`, `flatten`, `skip`) is present.
fn serde_flag(attrs: &[Attribute], key: &str) -> bool {
    let mut found = false;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _ignored_as_serde_reports_it = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident(key) && (meta.input.is_empty() || meta.input.peek(Token![,])) {
                found = true;
            }
            skip_value(&meta)
        });
    }
    found
}

/// The serialize-side string of `key` in the `#[serde(...)]` attributes.
///
/// Malformed serde attributes are left to serde, which reports them itself.
fn serde_key(attrs: &[Attribute], key: &str) -> Option<LitStr> {
    let mut found = None;
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("serde")) {
        let _ignored_as_serde_reports_it = attr.parse_nested_meta(|meta| {
            if found.is_none() && meta.path.is_ident(key) {
                if meta.input.peek(Token![=]) {
                    found = Some(meta.value()?.parse::<LitStr>()?);
                } else if meta.input.peek(syn::token::Paren) {
                    meta.parse_nested_meta(|side| {
                        if found.is_none() && side.path.is_ident("serialize") {
                            found = Some(side.value()?.parse::<LitStr>()?);
                        }
                        skip_value(&side)
                    })?;
                }
            }
            skip_value(&meta)
        });
    }
    found
}
