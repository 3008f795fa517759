//! The expansion of `#[hotreload]` on functions and `impl` blocks.

use crate::fingerprint::signature_fingerprint;
use crate::self_type::{mentions_self, receiver_ident, SelfType};
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, ToTokens};
use std::collections::HashMap;
use syn::spanned::Spanned;
use syn::{Error, FnArg, ImplItem, Item, Result};

/// Expands the attribute on `item`; with `enabled` false the item comes back as written
/// (minus inner `#[hotreload]` markers), so a disabled build pays nothing.
pub fn expand(args: TokenStream, item: Item, enabled: bool) -> Result<TokenStream> {
    if !args.is_empty() {
        return Err(Error::new(
            args.span(),
            "#[hotreload] takes no arguments here (`#[hotreload(skip)]` is only for methods inside a `#[hotreload] impl` block)",
        ));
    }
    match item {
        Item::Fn(function) if !enabled => Ok(function.into_token_stream()),
        Item::Fn(mut function) => {
            let receiver_or_self = function.sig.receiver().is_some()
                || mentions_self(function.sig.to_token_stream())
                || mentions_self(function.block.to_token_stream());
            if receiver_or_self {
                return Err(Error::new(
                    function.sig.ident.span(),
                    "#[hotreload] on a method must go on its `impl` block: a slot has to name the concrete type, which the method alone does not know. Write `#[hotreload] impl Type { … }` (every method becomes a slot; mark exceptions `#[hotreload(skip)]`)",
                ));
            }
            let path = function.sig.ident.to_string();
            let body = slot_body(&mut function.sig, &function.block, None, &path)?;
            *function.block = body;
            Ok(function.into_token_stream())
        }
        Item::Impl(block) => expand_impl(block, enabled),
        other => Err(Error::new(
            other.span(),
            "#[hotreload] goes on a function or on an `impl` block",
        )),
    }
}

/// Every method of the block becomes a slot, except those marked `#[hotreload(skip)]`.
fn expand_impl(mut block: syn::ItemImpl, enabled: bool) -> Result<TokenStream> {
    if enabled && !block.generics.params.is_empty() {
        return Err(Error::new(
            block.generics.span(),
            "#[hotreload] can't make a generic `impl` block hot-reloadable: a slot holds one function, a generic impl has one per instance. Move the code to patch into a non-generic function",
        ));
    }
    let self_type = SelfType {
        ty: (*block.self_ty).clone(),
        associated: block
            .items
            .iter()
            .filter_map(|item| match item {
                ImplItem::Type(assoc) => Some((assoc.ident.to_string(), assoc.ty.clone())),
                _ => None,
            })
            .collect::<HashMap<_, _>>(),
    };
    let type_path = match &block.trait_ {
        Some((_, trait_path, _)) => format!(
            "<{} as {}>",
            compact(block.self_ty.to_token_stream()),
            compact(trait_path.to_token_stream())
        ),
        None => format!("<{}>", compact(block.self_ty.to_token_stream())),
    };
    let mut errors: Option<Error> = None;
    for item in &mut block.items {
        let ImplItem::Fn(method) = item else { continue };
        let skip = take_marker(&mut method.attrs)?;
        if skip || !enabled {
            continue;
        }
        let path = format!("{type_path}::{}", method.sig.ident);
        match slot_body(&mut method.sig, &method.block, Some(&self_type), &path) {
            Ok(body) => method.block = body,
            Err(error) => {
                let hint =
                    format!("{error}; or mark it `#[hotreload(skip)]` to keep it a plain method");
                let error = Error::new(error.span(), hint);
                match &mut errors {
                    Some(all) => all.combine(error),
                    None => errors = Some(error),
                }
            }
        }
    }
    match errors {
        Some(errors) => Err(errors),
        None => Ok(block.into_token_stream()),
    }
}

/// Removes a method's own `#[hotreload]` / `#[hotreload(skip)]`; true for `skip`.
fn take_marker(attrs: &mut Vec<syn::Attribute>) -> Result<bool> {
    let mut skip = false;
    let mut result = Ok(());
    attrs.retain(|attr| {
        if !attr.path().is_ident("hotreload") {
            return true;
        }
        if let syn::Meta::List(list) = &attr.meta {
            match list.parse_args::<syn::Ident>() {
                Ok(word) if word == "skip" => skip = true,
                _ => {
                    result = Err(Error::new(
                        list.span(),
                        "the only argument is `skip`: `#[hotreload(skip)]`",
                    ))
                }
            }
        }
        false
    });
    result.map(|()| skip)
}

/// Refuses what a slot can't hold, with the reason.
fn check_eligible(sig: &syn::Signature) -> Result<()> {
    let refuse = |span: Span, why: &str| {
        Err(Error::new(
            span,
            format!("#[hotreload] can't patch `{}`: {why}", sig.ident),
        ))
    };
    if let Some(token) = &sig.asyncness {
        return refuse(token.span, "async fns are patched without #[hotreload]: remove the attribute. An edit is applied at the entry of the future's poll function, so running and suspended futures resume in the new code as long as what lives across each `.await` stays the same");
    }
    if let Some(token) = &sig.constness {
        return refuse(token.span, "a `const fn` can be evaluated at compile time, where no slot exists. Drop `const` or patch a non-const helper");
    }
    if let Some(param) = sig.generics.type_params().next() {
        return refuse(param.span(), "generic functions have one machine-code copy per type, so there is no single slot to rewire. Patch a non-generic function it calls");
    }
    if let Some(param) = sig.generics.const_params().next() {
        return refuse(param.span(), "const-generic functions have one machine-code copy per value, so there is no single slot to rewire");
    }
    if let Some(variadic) = &sig.variadic {
        return refuse(
            variadic.span(),
            "variadic functions can't be called through a slot",
        );
    }
    let impl_trait = |tokens: TokenStream| {
        tokens
            .into_iter()
            .any(|t| matches!(&t, TokenTree::Ident(i) if i == "impl"))
    };
    for input in &sig.inputs {
        if let FnArg::Typed(typed) = input {
            if impl_trait(typed.ty.to_token_stream()) {
                return refuse(typed.ty.span(), "`impl Trait` in argument position makes the function generic, so there is no single slot to rewire");
            }
        }
    }
    if let syn::ReturnType::Type(_, ty) = &sig.output {
        if impl_trait(ty.to_token_stream()) {
            return refuse(ty.span(), "a returned `impl Trait` hides a concrete type that a patch could change under the caller. Name the type");
        }
    }
    Ok(())
}

/// Turns `sig` into the visible function's signature and returns its new body: the original
/// body moved into a nested implementation function (`hotreload_abi::slot::IMPLEMENTATION_NAME`),
/// its slot, its registry entry, and the call
/// through the slot. `path` is the function's path below its module, for the registry.
fn slot_body(
    sig: &mut syn::Signature,
    body: &syn::Block,
    self_type: Option<&SelfType>,
    path: &str,
) -> Result<syn::Block> {
    check_eligible(sig)?;
    let mut impl_sig = sig.clone();
    let impl_name = format_ident!("{}", hotreload_abi::slot::IMPLEMENTATION_NAME);
    impl_sig.ident = impl_name.clone();
    let mut call_args = Vec::new();
    let mut impl_lints = TokenStream::new();
    for (index, (visible, implementation)) in sig
        .inputs
        .iter_mut()
        .zip(impl_sig.inputs.iter_mut())
        .enumerate()
    {
        match (visible, &*implementation) {
            (FnArg::Receiver(visible), FnArg::Receiver(receiver)) => {
                let self_type = self_type.expect("a receiver implies an impl block");
                let ty = self_type.substitute_node(&*receiver.ty)?;
                // `mut self` makes the binding mutable (in `&mut self` the `mut` is in the type).
                let mutability = receiver
                    .reference
                    .is_none()
                    .then_some(receiver.mutability)
                    .flatten();
                if receiver.reference.is_none() {
                    visible.mutability = None;
                }
                let name = receiver_ident();
                *implementation = syn::parse_quote!(#mutability #name: #ty);
                // `self: Box<Self>` was the user's choice of receiver, not a needless box.
                impl_lints = quote!(#[allow(clippy::boxed_local)]);
                call_args.push(quote!(self));
            }
            (FnArg::Typed(visible), _) => {
                let name = format_ident!("__hotreload_arg{index}");
                *visible.pat = syn::parse_quote!(#name);
                visible.attrs.clear();
                call_args.push(name.into_token_stream());
            }
            _ => unreachable!("both signatures come from the same inputs"),
        }
    }
    let impl_body = match self_type {
        Some(self_type) => {
            impl_sig = self_type.substitute_node(&impl_sig)?;
            self_type.substitute_node(body)?
        }
        None => body.clone(),
    };
    let fingerprint = signature_fingerprint(&impl_sig);
    let unsafety = &sig.unsafety;
    let abi = &sig.abi;
    let holes = sig.inputs.iter().map(|_| quote!(_));
    let fn_pointer = quote!(#unsafety #abi fn(#(#holes),*) -> _);
    let private = quote!(::hotreload::__private);
    let call = match unsafety {
        // SAFETY (generated): the caller upheld the contract of this `unsafe fn`, which is
        // the implementation's contract too.
        Some(_) => quote!(#[allow(unused_unsafe)] unsafe { __hotreload_fn(#(#call_args),*) }),
        None => quote!(__hotreload_fn(#(#call_args),*)),
    };
    Ok(syn::parse_quote! {{
        #[inline(never)]
        #impl_lints
        #impl_sig #impl_body

        static __HOTRELOAD_SLOT: #private::Slot = #private::Slot::new(#impl_name as *const ());

        #[#private::linkme::distributed_slice(#private::SLOTS)]
        #[linkme(crate = #private::linkme)]
        static __HOTRELOAD_ENTRY: #private::SlotEntry = #private::SlotEntry::new(
            &__HOTRELOAD_SLOT,
            #impl_name as *const (),
            ::core::concat!(::core::module_path!(), "::", #path),
            #fingerprint,
        );

        // SAFETY: the slot holds the original implementation or a replacement that the
        // runtime accepted only with this signature's fingerprint, so both have this type.
        let __hotreload_fn = unsafe { __HOTRELOAD_SLOT.get(#impl_name as #fn_pointer) };
        #call
    }})
}

/// Token text without the spaces `to_string` puts around punctuation: `crate::a::B<u8>`.
fn compact(tokens: TokenStream) -> String {
    let mut out = String::new();
    let mut previous_was_word = false;
    for token in tokens {
        let is_word = matches!(token, TokenTree::Ident(_) | TokenTree::Literal(_));
        if is_word && previous_was_word {
            out.push(' ');
        }
        match token {
            TokenTree::Group(group) => {
                let (open, close) = match group.delimiter() {
                    proc_macro2::Delimiter::Parenthesis => ("(", ")"),
                    proc_macro2::Delimiter::Bracket => ("[", "]"),
                    proc_macro2::Delimiter::Brace => ("{", "}"),
                    proc_macro2::Delimiter::None => ("", ""),
                };
                out.push_str(open);
                out.push_str(&compact(group.stream()));
                out.push_str(close);
            }
            other => out.push_str(&other.to_string()),
        }
        previous_was_word = is_word;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(item: TokenStream, enabled: bool) -> std::result::Result<String, String> {
        expand(TokenStream::new(), syn::parse2(item).unwrap(), enabled)
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn disabled_is_the_item_unchanged() {
        let item = quote! { pub fn add(a: u32, b: u32) -> u32 { a + b } };
        assert_eq!(expand_str(item.clone(), false).unwrap(), item.to_string());
        let block = quote! { impl Ball { #[hotreload(skip)] fn f(&self) {} fn g(&self) {} } };
        let plain = quote! { impl Ball { fn f(&self) {} fn g(&self) {} } };
        assert_eq!(expand_str(block, false).unwrap(), plain.to_string());
    }

    #[test]
    fn enabled_moves_the_body_into_a_slot() {
        let out = expand_str(quote! { pub fn add(a: u32, b: u32) -> u32 { a + b } }, true).unwrap();
        assert!(
            out.contains("fn __hotreload_impl (a : u32 , b : u32) -> u32 { a + b }"),
            "{out}"
        );
        assert!(
            out.contains("__HOTRELOAD_SLOT . get (__hotreload_impl as fn (_ , _) -> _)"),
            "{out}"
        );
        assert!(
            out.contains("pub fn add (__hotreload_arg0 : u32 , __hotreload_arg1 : u32) -> u32"),
            "{out}"
        );
    }

    #[test]
    fn refusals_say_why() {
        let cases = [
            (quote! { async fn f() {} }, "async fn"),
            (quote! { const fn f() {} }, "const fn"),
            (quote! { fn f<T>(t: T) {} }, "generic functions"),
            (quote! { fn f(t: impl Copy) {} }, "argument position"),
            (
                quote! { fn f() -> impl Copy { 1 } },
                "returned `impl Trait`",
            ),
            (quote! { fn f(&self) {} }, "must go on its `impl` block"),
            (
                quote! { impl<T> Wrapper<T> { fn f(&self) {} } },
                "generic `impl` block",
            ),
            (quote! { struct S; }, "goes on a function"),
        ];
        for (item, message) in cases {
            let error = expand_str(item.clone(), true).unwrap_err();
            assert!(error.contains(message), "{item}: {error}");
        }
    }

    #[test]
    fn compact_paths() {
        assert_eq!(
            compact(quote!(crate::shapes::Square<'a, u8>)),
            "crate::shapes::Square<'a,u8>"
        );
        assert_eq!(compact(quote!(dyn Fn(u8))), "dyn Fn(u8)");
    }
}
