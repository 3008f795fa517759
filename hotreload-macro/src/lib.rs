//! `#[hotreload]`: makes a function a jump-table slot that `hotpatch` can rewire while the
//! program runs. Use it through the `hotreload` crate (`use hotreload::hotreload;`).
//!
//! The body moves into a nested function with a stable symbol (`<fn path>::__hotreload_impl`);
//! the visible function loads the slot and calls through it. Each slot is registered, with
//! its path and a signature fingerprint, in a linker-section registry the runtime enumerates.
//! With the `enabled` feature off the attribute returns the item unchanged: zero cost.

mod expand;
mod fingerprint;
mod self_type;

use proc_macro::TokenStream;
use syn::parse_macro_input;

/// Makes a function (or every method of a non-generic `impl` block) hot-reloadable.
///
/// - On a free function, or an associated function that does not mention `Self`/`self`.
/// - On an `impl Type` or `impl Trait for Type` block: every method becomes a slot. A method
///   that can't be one (generic, `async`, `const`) is refused unless marked `#[hotreload(skip)]`.
///   Methods need the block-level attribute because a slot must name the concrete type.
/// - Not on an `async fn`: it needs no attribute, an edit reaches its futures through the entry
///   of their poll function (the compile error says to remove the attribute).
#[proc_macro_attribute]
pub fn hotreload(args: TokenStream, item: TokenStream) -> TokenStream {
    let args = proc_macro2::TokenStream::from(args);
    let item = parse_macro_input!(item as syn::Item);
    expand::expand(args, item, cfg!(feature = "enabled"))
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
