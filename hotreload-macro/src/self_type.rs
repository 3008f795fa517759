//! Rewrites `Self` and `self` so a method body can live in a nested function.
//!
//! A nested function may not name `Self` or the outer `self`, so inside the implementation
//! function `Self` becomes the concrete type of the `impl` block (or, for `Self::Assoc`, the
//! block's associated type) and the receiver becomes an ordinary parameter.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote, ToTokens};
use std::collections::HashMap;

/// Name the receiver gets inside the implementation function.
pub const RECEIVER: &str = "__hotreload_self";

/// What `Self` means inside one `impl` block.
pub struct SelfType {
    /// The block's self type, e.g. `Ball` or `crate::shapes::Square`.
    pub ty: syn::Type,
    /// The block's associated types (`type Item = u32;`), so `Self::Item` can be resolved.
    pub associated: HashMap<String, syn::Type>,
}

impl SelfType {
    /// Replaces `Self` by the concrete type and the value `self` by [`RECEIVER`].
    /// `self::path` (a module path) is left alone.
    pub fn substitute(&self, tokens: TokenStream) -> TokenStream {
        let tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut out = TokenStream::new();
        let mut i = 0;
        while i < tokens.len() {
            let followed_by_path = is_path_separator(&tokens[i + 1..]);
            match &tokens[i] {
                TokenTree::Ident(ident) if ident == "Self" && followed_by_path => {
                    // `Self::Assoc` → the associated type itself, when the block defines it.
                    let assoc = match tokens.get(i + 3) {
                        Some(TokenTree::Ident(name)) => self.associated.get(&name.to_string()),
                        None | Some(_) => None,
                    };
                    if let Some(assoc) = assoc {
                        out.extend(quote!(#assoc));
                        i += 4;
                        continue;
                    }
                    let ty = &self.ty;
                    out.extend(quote!(<#ty>));
                }
                TokenTree::Ident(ident) if ident == "Self" => self.ty.to_tokens(&mut out),
                TokenTree::Ident(ident) if ident == "self" && !followed_by_path => {
                    out.extend([TokenTree::Ident(Ident::new(RECEIVER, ident.span()))]);
                }
                TokenTree::Group(group) => {
                    let mut inner = Group::new(group.delimiter(), self.substitute(group.stream()));
                    inner.set_span(group.span());
                    out.extend([TokenTree::Group(inner)]);
                }
                other => out.extend([other.clone()]),
            }
            i += 1;
        }
        out
    }

    /// Substitutes inside a syntax node and parses the result back.
    pub fn substitute_node<T: ToTokens + syn::parse::Parse>(&self, node: &T) -> syn::Result<T> {
        syn::parse2(self.substitute(node.to_token_stream()))
    }
}

/// True when the tokens start with `::`.
fn is_path_separator(rest: &[TokenTree]) -> bool {
    matches!(
        rest,
        [TokenTree::Punct(a), TokenTree::Punct(b), ..]
            if a.as_char() == ':' && b.as_char() == ':' && a.spacing() == proc_macro2::Spacing::Joint
    )
}

/// True when the tokens mention `Self` or the value `self` anywhere.
pub fn mentions_self(tokens: TokenStream) -> bool {
    let tokens: Vec<TokenTree> = tokens.into_iter().collect();
    tokens.iter().enumerate().any(|(i, token)| match token {
        TokenTree::Ident(ident) => {
            ident == "Self" || (ident == "self" && !is_path_separator(&tokens[i + 1..]))
        }
        TokenTree::Group(group) => mentions_self(group.stream()),
        _ => false,
    })
}

/// The receiver ident, spanned at the call site, for declaring the parameter.
pub fn receiver_ident() -> Ident {
    Ident::new(RECEIVER, Span::call_site())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_type() -> SelfType {
        SelfType {
            ty: syn::parse_quote!(Counter),
            associated: HashMap::from([("Item".to_string(), syn::parse_quote!(u32))]),
        }
    }

    #[test]
    fn replaces_self_type_value_and_associated_types() {
        let body = quote! {
            let x: Option<Self::Item> = Self::start();
            let y = Self { n: self.n };
            self::helper(x, y)
        };
        let out = self_type().substitute(body).to_string();
        assert_eq!(
            out,
            quote! {
                let x: Option<u32> = <Counter>::start();
                let y = Counter { n: __hotreload_self.n };
                self::helper(x, y)
            }
            .to_string()
        );
    }

    #[test]
    fn detects_self_but_not_module_paths() {
        assert!(mentions_self(quote!(self.x + 1)));
        assert!(mentions_self(quote!({ Self::new() })));
        assert!(!mentions_self(quote!(self::helper(1))));
        assert!(!mentions_self(quote!(itself + selfish)));
    }
}
