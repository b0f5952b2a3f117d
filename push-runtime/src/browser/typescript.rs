//! TypeScript declarations of a channel's events, for the browser client.
//!
//! `#[push_channel]` describes the enum as data (an [`EnumShape`]: its serde
//! tagging, each variant's wire name and fields, each field's type as a
//! [`TsType`] function); [`declarations`] turns that into the text served at
//! `{base}/client.d.ts` and returned by the generated `typescript()` function.
//!
//! Field types must implement [`TsType`]. It is implemented for strings,
//! numbers, `bool`, `Option`, sequences, string-keyed maps, tuples, smart
//! pointers, `serde_json::Value` and `serde_json::value::RawValue`; implement
//! it for your own nested types:
//!
//! ```
//! use push_runtime::typescript::TsType;
//!
//! #[derive(serde::Serialize)]
//! struct Point { x: f64, y: f64 }
//!
//! impl TsType for Point {
//!     fn ts_type() -> String {
//!         "{ x: number; y: number }".into()
//!     }
//! }
//! assert_eq!(<Option<Vec<Point>>>::ts_type(), "({ x: number; y: number })[] | null");
//! ```
//!
//! A hand-written trait (rather than ts-rs or specta) keeps the runtime free
//! of a second derive ecosystem, and the mapping follows serde's JSON, which
//! is what the wire carries.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt::Write as _;
use std::rc::Rc;
use std::sync::Arc;

/// A Rust type's TypeScript counterpart, as serde serializes it to JSON.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no TypeScript type for the browser client's declarations",
    note = "implement `push_runtime::typescript::TsType` for `{Self}`, returning the TypeScript type of its serde JSON (e.g. `\"{{ x: number; y: number }}\"`)"
)]
pub trait TsType {
    /// The TypeScript type, e.g. `string`, `number[]`, `{ x: number }`.
    fn ts_type() -> String;
}

/// Map keys, which JSON always writes as strings.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a map key in the TypeScript declarations",
    note = "maps are declared as `Record<string, V>`: use keys that serialize as strings or numbers"
)]
pub trait TsKey {}

macro_rules! ts_types {
    ($ts:literal: $($ty:ty),*) => {
        $(impl TsType for $ty {
            fn ts_type() -> String {
                $ts.into()
            }
        }
        impl TsKey for $ty {})*
    };
}

ts_types!("string": String, str, char);
ts_types!("number": u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64);
ts_types!("boolean": bool);

impl TsType for () {
    fn ts_type() -> String {
        "null".into()
    }
}

impl TsType for serde_json::Value {
    fn ts_type() -> String {
        "unknown".into()
    }
}

/// JSON written verbatim: any value.
impl TsType for serde_json::value::RawValue {
    fn ts_type() -> String {
        "unknown".into()
    }
}

impl<T: TsType + ?Sized> TsType for &T {
    fn ts_type() -> String {
        T::ts_type()
    }
}

impl<T: TsKey + ?Sized> TsKey for &T {}

impl TsType for Cow<'_, str> {
    fn ts_type() -> String {
        "string".into()
    }
}

impl TsKey for Cow<'_, str> {}

macro_rules! ts_wrappers {
    ($($wrapper:ident),*) => {
        $(impl<T: TsType + ?Sized> TsType for $wrapper<T> {
            fn ts_type() -> String {
                T::ts_type()
            }
        })*
    };
}

ts_wrappers!(Box, Rc, Arc);

impl<T: TsType> TsType for Option<T> {
    fn ts_type() -> String {
        format!("{} | null", T::ts_type())
    }
}

/// `T[]`, parenthesizing unions and intersections.
fn array_of(element: String) -> String {
    if element.contains('|') || element.contains('&') || element.starts_with('{') {
        format!("({element})[]")
    } else {
        format!("{element}[]")
    }
}

macro_rules! ts_sequences {
    ($($seq:ident),*) => {
        $(impl<T: TsType> TsType for $seq<T> {
            fn ts_type() -> String {
                array_of(T::ts_type())
            }
        })*
    };
}

ts_sequences!(Vec, VecDeque, BTreeSet);

impl<T: TsType, S> TsType for HashSet<T, S> {
    fn ts_type() -> String {
        array_of(T::ts_type())
    }
}

impl<T: TsType> TsType for [T] {
    fn ts_type() -> String {
        array_of(T::ts_type())
    }
}

impl<T: TsType, const N: usize> TsType for [T; N] {
    fn ts_type() -> String {
        array_of(T::ts_type())
    }
}

impl<K: TsKey, V: TsType, S> TsType for HashMap<K, V, S> {
    fn ts_type() -> String {
        format!("Record<string, {}>", V::ts_type())
    }
}

impl<K: TsKey, V: TsType> TsType for BTreeMap<K, V> {
    fn ts_type() -> String {
        format!("Record<string, {}>", V::ts_type())
    }
}

macro_rules! ts_tuples {
    ($(($($name:ident),+)),*) => {
        $(impl<$($name: TsType),+> TsType for ($($name,)+) {
            fn ts_type() -> String {
                let elements: Vec<String> = vec![$($name::ts_type()),+];
                format!("[{}]", elements.join(", "))
            }
        })*
    };
}

ts_tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F)
);

/// How serde represents the enum (its `tag`, `content` and `untagged` attributes).
#[derive(Debug, Clone, Copy)]
pub enum Tagging {
    /// serde's default: `{"<wire name>": <content>}`, a unit variant as `"<wire name>"`.
    External,
    /// `#[serde(tag = "t")]`: `{"t": "<wire name>", …fields}`.
    Internal {
        /// The tag key.
        tag: &'static str,
    },
    /// `#[serde(tag = "t", content = "c")]`: `{"t": "<wire name>", "c": <content>}`.
    Adjacent {
        /// The tag key.
        tag: &'static str,
        /// The content key.
        content: &'static str,
    },
    /// `#[serde(untagged)]`: the content alone.
    Untagged,
}

/// The fields of one variant.
#[derive(Debug, Clone, Copy)]
pub enum Fields {
    /// `Variant`.
    Unit,
    /// `Variant(A, B)`: the type of each field, in order.
    Tuple(&'static [fn() -> String]),
    /// `Variant { a: A }`: each serialized field.
    Struct(&'static [Field]),
}

/// A field of a struct variant as serde writes it.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The JSON key (after `rename` and `rename_all`); empty for a flattened field.
    pub name: &'static str,
    /// Its TypeScript type.
    pub ty: fn() -> String,
    /// `#[serde(flatten)]`: its fields are merged into the variant's object.
    pub flatten: bool,
    /// `#[serde(skip_serializing_if = "…")]`: serde may leave it out, so it is
    /// declared `name?: T` (a flattened one as `Partial<T>`).
    pub optional: bool,
}

/// One variant: its wire name and its fields.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    /// The wire name (serde's name of the variant).
    pub wire_name: &'static str,
    /// Its fields.
    pub fields: Fields,
    /// `#[serde(untagged)]` on the variant: written as its content alone,
    /// whatever the enum's tagging.
    pub untagged: bool,
}

/// A channel enum as serde serializes it.
#[derive(Debug, Clone, Copy)]
pub struct EnumShape {
    /// The enum's Rust name, used as the TypeScript name of the payload union.
    pub name: &'static str,
    /// serde's representation.
    pub tagging: Tagging,
    /// Every variant, in declaration order.
    pub variants: &'static [Variant],
}

/// The client API (`client.js`) declarations, independent of the channel.
const CLIENT_API: &str = include_str!("client.d.ts");

/// The text of `client.d.ts` for channel `shape` mounted at `path`: the
/// payload types, the map from wire name to payload, and the typed client API.
pub fn declarations(shape: &EnumShape, path: &str) -> String {
    let mut out = String::new();
    let name = shape.name;
    let _ = writeln!(
        out,
        "// TypeScript declarations of the browser client of channel `{name}` ({path}),\n// generated from the Rust enum by #[push_channel]. Do not edit."
    );
    let _ = writeln!(
        out,
        "\n/** The event payloads of `{name}`, one per wire name. */\nexport interface {name}Map {{"
    );
    for variant in shape.variants {
        let _ = writeln!(
            out,
            "  {}: {};",
            json_string(variant.wire_name),
            payload(shape.tagging, variant)
        );
    }
    out.push_str("}\n");
    let _ = writeln!(
        out,
        "\n/** Any event payload of `{name}`. */\nexport type {name} = {name}Map[keyof {name}Map];"
    );
    let _ = writeln!(
        out,
        "\n/** The wire names of `{name}`. */\nexport type {name}Name = keyof {name}Map;"
    );
    let _ = writeln!(
        out,
        "\n/** The event map the client functions are typed with. */\nexport type Events = {name}Map;\n/** The channel's base path. */\nexport declare const PATH: {};\n",
        json_string(path)
    );
    out.push_str(CLIENT_API);
    out
}

/// What serde writes for `variant` under `tagging`.
fn payload(tagging: Tagging, variant: &Variant) -> String {
    let tagging = if variant.untagged {
        Tagging::Untagged
    } else {
        tagging
    };
    let wire = json_string(variant.wire_name);
    let content = content(&variant.fields);
    match tagging {
        Tagging::External => match content {
            None => wire,
            Some(content) => format!("{{ {wire}: {content} }}"),
        },
        Tagging::Internal { tag } => {
            let tag = json_string(tag);
            match &variant.fields {
                Fields::Unit => format!("{{ {tag}: {wire} }}"),
                Fields::Struct(fields) => object(Some((&tag, &wire)), fields),
                // A newtype's own fields sit next to the tag.
                Fields::Tuple(types) => {
                    let inner: Vec<String> = types.iter().map(|ty| ty()).collect();
                    format!("{{ {tag}: {wire} }} & {}", inner.join(" & "))
                }
            }
        }
        Tagging::Adjacent { tag, content: key } => {
            let tag = json_string(tag);
            match content {
                None => format!("{{ {tag}: {wire} }}"),
                Some(content) => format!("{{ {tag}: {wire}; {}: {content} }}", json_string(key)),
            }
        }
        Tagging::Untagged => content.unwrap_or_else(|| "null".into()),
    }
}

/// The variant's content; `None` for a unit variant.
fn content(fields: &Fields) -> Option<String> {
    match fields {
        Fields::Unit => None,
        Fields::Tuple([single]) => Some(single()),
        Fields::Tuple(types) => {
            let types: Vec<String> = types.iter().map(|ty| ty()).collect();
            Some(format!("[{}]", types.join(", ")))
        }
        Fields::Struct(fields) => Some(object(None, fields)),
    }
}

/// An object type with an optional tag entry first, flattened fields intersected.
fn object(tag: Option<(&str, &str)>, fields: &[Field]) -> String {
    let mut entries: Vec<String> = Vec::new();
    if let Some((key, value)) = tag {
        entries.push(format!("{key}: {value}"));
    }
    let mut flattened = Vec::new();
    for field in fields {
        let ty = (field.ty)();
        match (field.flatten, field.optional) {
            (true, false) => flattened.push(ty),
            (true, true) => flattened.push(format!("Partial<{ty}>")),
            (false, false) => entries.push(format!("{}: {ty}", json_string(field.name))),
            (false, true) => entries.push(format!("{}?: {ty}", json_string(field.name))),
        }
    }
    let mut text = if entries.is_empty() {
        "{}".to_owned()
    } else {
        format!("{{ {} }}", entries.join("; "))
    };
    for other in flattened {
        let _ = write!(text, " & {other}");
    }
    text
}

/// A TypeScript string literal (JSON's quoting is valid TypeScript).
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// The declarations of a channel whose enum was not described (a hand-written
/// [`Channel`](crate::Channel) impl): payloads are `unknown`.
pub fn untyped_declarations(names: &[&str], path: &str) -> String {
    let mut out = format!(
        "// TypeScript declarations of the browser client of the channel at {path}.\n// Its Rust enum was not described, so payloads are `unknown`.\n\nexport interface ChannelMap {{\n"
    );
    for name in names {
        let _ = writeln!(out, "  {}: unknown;", json_string(name));
    }
    let _ = writeln!(
        out,
        "}}\n\nexport type Events = ChannelMap;\nexport declare const PATH: {};\n",
        json_string(path)
    );
    out.push_str(CLIENT_API);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn string() -> String {
        String::ts_type()
    }
    fn number() -> String {
        u32::ts_type()
    }

    const MESSAGE: Variant = Variant {
        wire_name: "message",
        fields: Fields::Struct(&[
            Field {
                name: "from",
                ty: string,
                flatten: false,
                optional: false,
            },
            Field {
                name: "n",
                ty: number,
                flatten: false,
                optional: false,
            },
        ]),
        untagged: false,
    };
    const LEFT: Variant = Variant {
        wire_name: "left",
        fields: Fields::Unit,
        untagged: false,
    };
    const JOINED: Variant = Variant {
        wire_name: "joined",
        fields: Fields::Tuple(&[string]),
        untagged: false,
    };
    const PAIR: Variant = Variant {
        wire_name: "pair",
        fields: Fields::Tuple(&[string, number]),
        untagged: false,
    };

    #[test]
    fn rust_types_map_to_their_json_types() {
        assert_eq!(<Vec<Option<String>>>::ts_type(), "(string | null)[]");
        assert_eq!(
            <HashMap<String, Vec<u8>>>::ts_type(),
            "Record<string, number[]>"
        );
        assert_eq!(<BTreeMap<u64, bool>>::ts_type(), "Record<string, boolean>");
        assert_eq!(<[f32; 3]>::ts_type(), "number[]");
        assert_eq!(<(String, i64)>::ts_type(), "[string, number]");
        assert_eq!(<Box<&str>>::ts_type(), "string");
        assert_eq!(<Option<Option<bool>>>::ts_type(), "boolean | null | null");
        assert_eq!(<Box<serde_json::value::RawValue>>::ts_type(), "unknown");
    }

    #[test]
    fn each_tagging_gives_serde_json_shape() {
        let external: Vec<String> = [MESSAGE, LEFT, JOINED, PAIR]
            .iter()
            .map(|variant| payload(Tagging::External, variant))
            .collect();
        assert_eq!(
            external,
            [
                r#"{ "message": { "from": string; "n": number } }"#,
                r#""left""#,
                r#"{ "joined": string }"#,
                r#"{ "pair": [string, number] }"#,
            ]
        );
        let internal = Tagging::Internal { tag: "type" };
        assert_eq!(
            payload(internal, &MESSAGE),
            r#"{ "type": "message"; "from": string; "n": number }"#
        );
        assert_eq!(payload(internal, &LEFT), r#"{ "type": "left" }"#);
        let adjacent = Tagging::Adjacent {
            tag: "t",
            content: "c",
        };
        assert_eq!(
            payload(adjacent, &PAIR),
            r#"{ "t": "pair"; "c": [string, number] }"#
        );
        assert_eq!(payload(adjacent, &LEFT), r#"{ "t": "left" }"#);
        assert_eq!(payload(Tagging::Untagged, &LEFT), "null");
        assert_eq!(payload(Tagging::Untagged, &JOINED), "string");
    }

    #[test]
    fn the_constructors_of_the_generated_code_build_the_same_variants() {
        use crate::__private::{TypeFn, field, struct_variant, tuple_variant, unit_variant};
        const FIELDS: &[Field] = &[
            field("x", number, true),
            field("from", string, false),
            field("n", number, false),
        ];
        const TYPES: &[TypeFn] = &[string, string, number];
        const BUILT: [Variant; 4] = [
            struct_variant("message", FIELDS, 1, 3),
            unit_variant("left"),
            tuple_variant("joined", TYPES, 0, 1),
            tuple_variant("pair", TYPES, 1, 3),
        ];
        for (built, written) in BUILT.iter().zip([MESSAGE, LEFT, JOINED, PAIR]) {
            assert_eq!(built.wire_name, written.wire_name);
            for tagging in TAGGINGS {
                assert_eq!(payload(tagging, built), payload(tagging, &written));
            }
        }
        let flattened = struct_variant("f", FIELDS, 0, 1);
        assert_eq!(
            payload(Tagging::External, &flattened),
            r#"{ "f": {} & number }"#
        );
    }

    /// One of each way serde tags an enum.
    const TAGGINGS: [Tagging; 4] = [
        Tagging::External,
        Tagging::Internal { tag: "type" },
        Tagging::Adjacent {
            tag: "t",
            content: "c",
        },
        Tagging::Untagged,
    ];

    #[test]
    fn an_undescribed_channel_gets_unknown_payloads() {
        let text = untyped_declarations(&["a", "b"], "/x");
        assert!(
            text.contains("  \"a\": unknown;\n  \"b\": unknown;\n"),
            "{text}"
        );
        assert!(text.contains("export declare function subscribe"), "{text}");
    }

    #[test]
    fn a_field_serde_may_leave_out_is_optional() {
        use crate::__private::{field, optional_field};
        let fields = [
            field("a", string, false),
            optional_field("b", number, false),
            optional_field("", string, true),
        ];
        assert_eq!(
            object(None, &fields),
            r#"{ "a": string; "b"?: number } & Partial<string>"#
        );
    }

    #[test]
    fn an_untagged_variant_is_its_content_under_every_tagging() {
        use crate::__private::untagged;
        for tagging in TAGGINGS {
            assert_eq!(payload(tagging, &untagged(JOINED)), "string");
            assert_eq!(payload(tagging, &untagged(LEFT)), "null");
            assert_eq!(
                payload(tagging, &untagged(MESSAGE)),
                r#"{ "from": string; "n": number }"#
            );
        }
    }

    #[test]
    fn flattened_fields_are_intersected() {
        fn extra() -> String {
            "{ x: number }".into()
        }
        let fields = [
            Field {
                name: "a",
                ty: string,
                flatten: false,
                optional: false,
            },
            Field {
                name: "",
                ty: extra,
                flatten: true,
                optional: false,
            },
        ];
        assert_eq!(object(None, &fields), r#"{ "a": string } & { x: number }"#);
    }
}
