// The expansion names everything by absolute path: it compiles in a module
// without the prelude.
#![no_implicit_prelude]

mod events {
    #[::push_runtime::push_channel(path = "/hygiene")]
    #[derive(::std::clone::Clone, ::serde::Serialize, ::serde::Deserialize)]
    pub enum Event {
        Unit,
        Tuple(::std::string::String),
        Struct { n: u8 },
    }
}

fn main() {}
