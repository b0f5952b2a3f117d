//! Snapshots of the expansion, one per feature, pretty-printed, plus checks
//! that every error is reported at once.

use crate::expand::expand;
use proc_macro2::TokenStream;
use quote::quote;

fn pretty(attr: TokenStream, item: TokenStream) -> String {
    let output = expand(attr, item);
    let file: syn::File = syn::parse2(output).expect("the expansion parses as a file");
    prettyplease::unparse(&file)
}

/// The messages of the `compile_error!`s in the expansion.
fn error_messages(attr: TokenStream, item: TokenStream) -> Vec<String> {
    let file: syn::File = syn::parse2(expand(attr, item)).expect("the expansion parses");
    file.items
        .iter()
        .filter_map(|item| match item {
            syn::Item::Macro(call)
                if call.mac.path.is_ident("compile_error")
                    || call
                        .mac
                        .path
                        .segments
                        .last()
                        .is_some_and(|last| last.ident == "compile_error") =>
            {
                Some(
                    call.mac
                        .parse_body::<syn::LitStr>()
                        .expect("a message")
                        .value(),
                )
            }
            _ => None,
        })
        .collect()
}

#[test]
fn basic_internally_tagged_chat_enum() {
    insta::assert_snapshot!(pretty(
        quote!(path = "/chat"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            #[serde(tag = "type", rename_all = "snake_case")]
            pub enum ChatEvent {
                Message { from: String, text: String },
                Joined(String),
                Left,
            }
        },
    ));
}

#[test]
fn rename_all_and_rename() {
    insta::assert_snapshot!(pretty(
        quote!(path = "/errors"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            #[serde(rename_all(serialize = "SCREAMING-KEBAB-CASE", deserialize = "snake_case"))]
            pub(crate) enum ServerEvent {
                HTTPError { status: u16 },
                #[serde(rename = "user:joined")]
                UserJoined(String),
                #[serde(rename(deserialize = "ignored", serialize = "user:left"), alias = "gone")]
                UserLeft(String),
                ShutdownSoon,
            }
        },
    ));
}

#[test]
fn default_path_is_kebab_case_enum_name() {
    insta::assert_snapshot!(pretty(
        quote!(),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            enum ChatEvent { Ping }
        },
    ));
}

#[test]
fn crate_option_replaces_every_runtime_path() {
    let expanded = pretty(
        quote!(path = "/chat", crate = "::my_push"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            pub enum ChatEvent { Ping }
        },
    );
    assert!(!expanded.contains("push_runtime"), "{expanded}");
    insta::assert_snapshot!(expanded);
}

#[test]
fn kind_option_names_the_companion_enum() {
    insta::assert_snapshot!(pretty(
        quote!(kind = "ChatKind"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            pub enum ChatEvent { Ping, Pong }
        },
    ));
}

#[test]
fn errors_still_emit_the_enum_unchanged() {
    insta::assert_snapshot!(pretty(
        quote!(path = "chat"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            pub enum ChatEvent {
                Ping,
                #[serde(rename = "Ping")]
                Pong,
            }
        },
    ));
}

#[test]
fn every_error_is_reported_at_once() {
    let messages = error_messages(
        quote!(path = "/chat/", colour = "blue", kind = 3, path = "/again"),
        quote! {
            #[serde(rename_all = "kebab_case")]
            enum Events<T> {
                #[serde(rename = "push.ready")]
                Ready(T),
                #[serde(rename = "a")]
                A,
                #[serde(rename = "a")]
                B,
            }
        },
    );
    let expected = [
        "unknown option `colour`; valid options are `path`, `crate` and `kind`",
        "the value of `kind` must be a string literal, e.g. `kind = \"...\"`",
        "duplicate option `path`",
        "unknown rename rule `rename_all = \"kebab_case\"`",
        "does not support generic enums",
        "invalid path `/chat/`: a path must not end with `/`",
        "invalid wire name `push.ready` of variant `Ready`: wire names starting with `push.` are reserved for control events",
        "duplicate wire name `a`: variant `A` already serializes under this name",
    ];
    assert_eq!(messages.len(), expected.len(), "{messages:#?}");
    for (message, expected) in messages.iter().zip(expected) {
        assert!(
            message.contains(expected),
            "{message:?} should contain {expected:?}"
        );
    }
}

#[test]
fn not_an_enum() {
    let struct_messages = error_messages(
        quote!(),
        quote!(
            struct Event {
                a: u8,
            }
        ),
    );
    assert_eq!(
        struct_messages,
        ["`#[push_channel]` only applies to enums, not to a struct"]
    );
    let union_messages = error_messages(quote!(), quote!(union Event { a: u8 }));
    assert_eq!(
        union_messages,
        ["`#[push_channel]` only applies to enums, not to a union"]
    );
    let fn_messages = error_messages(
        quote!(),
        quote!(
            fn event() {}
        ),
    );
    assert_eq!(fn_messages, ["`#[push_channel]` only applies to enums"]);
}

#[test]
fn empty_enum_and_invalid_default_path() {
    let messages = error_messages(
        quote!(),
        quote!(
            enum Événement {}
        ),
    );
    assert_eq!(messages.len(), 2, "{messages:#?}");
    assert!(
        messages[0].contains("at least one variant"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1]
            .starts_with("the default path `/événement` made from the enum's name is invalid"),
        "{}",
        messages[1]
    );
}

#[test]
fn option_values_that_are_not_a_path_or_an_ident() {
    let messages = error_messages(
        quote!(crate = "not a path", kind = "Two Words", path),
        quote!(
            enum E {
                A,
            }
        ),
    );
    assert_eq!(messages.len(), 3, "{messages:#?}");
    assert!(messages[0].contains("`not a path` is not a path"));
    assert!(messages[1].contains("`Two Words` is not an identifier"));
    assert!(messages[2].contains("expected `path = \"...\"`"));
}

#[test]
fn rename_all_from_serde_rules_not_heck() {
    let expanded = pretty(
        quote!(),
        quote! {
            #[serde(rename_all = "snake_case")]
            enum Failure { HTTPError, IOError }
        },
    );
    assert!(
        expanded.contains(r#"&["h_t_t_p_error", "i_o_error"]"#),
        "{expanded}"
    );
}

#[test]
fn unrelated_serde_keys_are_ignored() {
    let expanded = pretty(
        quote!(),
        quote! {
            #[serde(tag = "t", content = "c", bound(serialize = "X: Y"), rename_all = "camelCase")]
            enum Ev {
                #[serde(skip_deserializing, with = "module", rename(deserialize = "d"))]
                FirstOne(u8),
                #[serde(other)]
                Unknown,
            }
        },
    );
    assert!(
        expanded.contains(r#"&["firstOne", "unknown"]"#),
        "{expanded}"
    );
}

#[test]
fn typescript_shape_follows_serde_representation_and_field_renames() {
    insta::assert_snapshot!(pretty(
        quote!(path = "/feed"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            #[serde(tag = "kind", content = "body", rename_all_fields = "camelCase")]
            pub enum FeedEvent {
                Posted { post_id: u64, #[serde(rename = "by")] author: String, tags: Vec<String> },
                #[serde(rename_all = "kebab-case")]
                Edited { post_id: u64, #[serde(skip)] cache: u8, #[serde(flatten)] extra: Extra },
                Scored(u64, Option<f32>),
                Cleared,
            }
        },
    ));
}

#[test]
fn serde_inside_cfg_attr_on_variants_and_fields_is_refused_where_it_is_written() {
    let messages = error_messages(
        quote!(),
        quote! {
            #[derive(Clone, Serialize)]
            enum Ev {
                #[cfg_attr(feature = "v2", serde(rename = "message"))]
                Message {
                    #[cfg_attr(all(), allow(unused), serde(skip_serializing_if = "Option::is_none"))]
                    text: Option<String>,
                },
                #[cfg_attr(test, cfg_attr(unix, serde(untagged)))]
                Other(#[cfg_attr(test, serde(skip))] u8),
            }
        },
    );
    assert_eq!(messages.len(), 4, "{messages:#?}");
    for message in &messages {
        assert!(
            message.starts_with(
                "`#[push_channel]` cannot honour a `serde` attribute inside `cfg_attr` on a variant or a field"
            ) && message.contains("write the `#[serde(...)]` attribute without `cfg_attr`"),
            "{message}"
        );
    }
}

#[test]
fn cfg_attr_without_serde_is_fine() {
    let messages = error_messages(
        quote!(),
        quote! {
            #[derive(Clone, Serialize)]
            #[cfg_attr(feature = "debug", derive(Debug))]
            #[cfg_attr(test, cfg_attr(unix, allow(dead_code)))]
            enum Ev {
                #[cfg_attr(test, doc = "serde")]
                Message { #[cfg_attr(test, allow(unused))] text: String },
            }
        },
    );
    assert_eq!(messages, Vec::<String>::new());
}

#[test]
fn typescript_declares_what_serde_may_leave_out_or_writes_bare() {
    insta::assert_snapshot!(pretty(
        quote!(path = "/alerts"),
        quote! {
            #[derive(Clone, Serialize, Deserialize)]
            #[serde(rename_all = "snake_case")]
            pub enum AlertEvent {
                Raised {
                    id: u64,
                    #[serde(skip_serializing_if = "Option::is_none")]
                    note: Option<String>,
                    #[serde(default)]
                    level: u8,
                    #[serde(skip_serializing)]
                    secret: String,
                    #[serde(skip)]
                    cache: u64,
                    #[serde(flatten, skip_serializing_if = "Extra::is_empty")]
                    extra: Extra,
                },
                Pair(u8, #[serde(skip)] u64),
                Cleared(#[serde(skip)] u64),
                Count(#[serde(skip_serializing_if = "is_zero")] u64),
                #[serde(untagged)]
                Raw(String),
                #[serde(untagged)]
                Nothing,
            }
        },
    ));
}

#[test]
fn skip_serializing_if_in_a_tuple_variant_is_refused_at_its_path() {
    let messages = error_messages(
        quote!(),
        quote! {
            enum Ev {
                Pair(u8, #[serde(skip_serializing_if = "Option::is_none")] Option<u8>),
            }
        },
    );
    assert_eq!(
        messages,
        [
            "`skip_serializing_if` in tuple variant `Pair` cannot be declared in TypeScript: serde leaves the element out of the array and shifts the ones after it; make `Pair` a struct variant, whose field is then declared optional (`name?: T`)"
        ]
    );
}
