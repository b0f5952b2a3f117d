//! The size of the expansion of a 200-variant enum, the input of the
//! compile-time benchmark (`.ci/compile-bench`): a change to the macro that
//! makes every channel's expansion much larger fails here, before it shows
//! up as slower builds.

use crate::expand::expand;
use proc_macro2::TokenStream;
use quote::{format_ident, quote};

/// The enum of the benchmark: 200 struct variants with two fields each.
pub(crate) fn wide_enum(variants: usize) -> TokenStream {
    let variants = (0..variants).map(|i| {
        let name = format_ident!("Variant{i}");
        quote! { #name { id: u64, text: String } }
    });
    quote! {
        #[derive(Clone, Debug, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        pub enum WideEvent { #(#variants,)* }
    }
}

/// Lines of the pretty-printed expansion.
pub(crate) fn expansion_lines(variants: usize) -> usize {
    let output = expand(quote!(path = "/wide"), wide_enum(variants));
    let file: syn::File = syn::parse2(output).expect("the expansion parses as a file");
    prettyplease::unparse(&file).lines().count()
}

/// Budget: about 1.25 times what the expansion takes today, and linear in
/// the variants. Before the TypeScript description was added it was 1,452
/// lines for 200 variants (7 per variant); with it, as nested struct
/// literals, 4,870 (24 per variant); with the thin description (one array of
/// fields and one call per variant, see `render::typescript_shape`), 2,076
/// (10 per variant).
#[test]
fn a_200_variant_enum_expands_to_a_bounded_number_of_lines() {
    let lines = expansion_lines(200);
    let per_variant = (lines - expansion_lines(1)) as f64 / 199.0;
    // Read by .ci/compile-bench.
    println!("expansion lines (200 variants): {lines}, {per_variant:.1} per variant");
    assert!(
        lines <= 2600,
        "the expansion of 200 variants grew to {lines} lines"
    );
    assert!(
        per_variant <= 12.5,
        "each variant now costs {per_variant:.1} lines of expansion"
    );
}
