//! Signature fingerprints: a patch whose function has another signature than the slot it
//! targets must be refused, because the running callers pass arguments the old way.
//!
//! The fingerprint hashes the normalised signature: ABI, unsafety, receiver, argument and
//! return types, as written (after `Self` is replaced by the concrete type). Parameter names,
//! patterns and lifetimes are left out: they do not change how a call is made. Types are
//! compared as spelled, so `String` vs `std::string::String` counts as a change (a needless
//! refusal, never an unsafe patch).

use proc_macro2::{TokenStream, TokenTree};
use quote::ToTokens;

/// The normalised text of a signature whose `Self` has already been substituted.
pub fn normalised_signature(sig: &syn::Signature) -> String {
    let abi = sig
        .abi
        .as_ref()
        .map(|abi| {
            abi.name
                .as_ref()
                .map_or("C".to_string(), |name| name.value())
        })
        .unwrap_or_else(|| "Rust".to_string());
    let arguments: Vec<String> = sig
        .inputs
        .iter()
        .map(|input| match input {
            syn::FnArg::Receiver(receiver) => format!("self: {}", render(&receiver.ty)),
            syn::FnArg::Typed(typed) => render(&typed.ty),
        })
        .collect();
    let output = match &sig.output {
        syn::ReturnType::Default => "()".to_string(),
        syn::ReturnType::Type(_, ty) => render(ty),
    };
    format!(
        "extern {abi} {unsafety}fn({arguments}) -> {output}",
        unsafety = if sig.unsafety.is_some() {
            "unsafe "
        } else {
            ""
        },
        arguments = arguments.join(", "),
    )
}

/// The fingerprint of a signature whose `Self` has already been substituted: the ABI's hash
/// of its normalised text, which the runtime compares with a patch's.
pub fn signature_fingerprint(sig: &syn::Signature) -> u64 {
    hotreload_abi::hash::fnv1a(normalised_signature(sig).as_bytes())
}

/// Token text with lifetimes removed.
fn render(node: &impl ToTokens) -> String {
    strip_lifetimes(node.to_token_stream()).to_string()
}

fn strip_lifetimes(tokens: TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        match token {
            TokenTree::Punct(p) if p.as_char() == '\'' => {
                tokens.next(); // the lifetime's name
                if matches!(tokens.peek(), Some(TokenTree::Punct(c)) if c.as_char() == ',') {
                    tokens.next(); // `Foo<'a, T>`
                }
            }
            TokenTree::Group(group) => {
                let inner =
                    proc_macro2::Group::new(group.delimiter(), strip_lifetimes(group.stream()));
                out.extend([TokenTree::Group(inner)]);
            }
            other => out.extend([other]),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fingerprint(item: syn::ItemFn) -> u64 {
        signature_fingerprint(&item.sig)
    }

    #[test]
    fn names_bodies_and_lifetimes_do_not_count() {
        let a = fingerprint(syn::parse_quote! { fn f<'a>(x: &'a str, n: u32) -> &'a str { x } });
        let b = fingerprint(syn::parse_quote! { fn g(text: &str, count: u32) -> &str { "" } });
        assert_eq!(a, b);
    }

    #[test]
    fn types_abi_unsafety_and_receiver_count() {
        let base = fingerprint(syn::parse_quote! { fn f(x: u32) -> u32 { x } });
        let variants = [
            fingerprint(syn::parse_quote! { fn f(x: u64) -> u32 { 0 } }),
            fingerprint(syn::parse_quote! { fn f(x: u32) -> u64 { 0 } }),
            fingerprint(syn::parse_quote! { fn f(x: u32) { } }),
            fingerprint(syn::parse_quote! { fn f(x: u32, y: u32) -> u32 { x } }),
            fingerprint(syn::parse_quote! { unsafe fn f(x: u32) -> u32 { x } }),
            fingerprint(syn::parse_quote! { extern "C" fn f(x: u32) -> u32 { x } }),
            fingerprint(syn::parse_quote! { fn f(&self, x: u32) -> u32 { x } }),
            fingerprint(syn::parse_quote! { fn f(&mut self, x: u32) -> u32 { x } }),
        ];
        for (i, v) in variants.iter().enumerate() {
            assert_ne!(base, *v, "variant {i} collides with the base");
            for w in &variants[i + 1..] {
                assert_ne!(v, w);
            }
        }
    }

    #[test]
    fn normalised_text_is_readable() {
        let item: syn::ItemFn = syn::parse_quote! { fn f<'a>(&'a mut self, pos: (f32, f32), name: &'a str) -> Vec<u8> { todo!() } };
        assert_eq!(
            normalised_signature(&item.sig),
            "extern Rust fn(self: & mut Self, (f32 , f32), & str) -> Vec < u8 >"
        );
    }
}
