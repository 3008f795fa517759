use proc_macro::TokenStream;
#[proc_macro_attribute]
pub fn hotreload(_a: TokenStream, item: TokenStream) -> TokenStream { item }
