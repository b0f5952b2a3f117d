//! Collects every spanned error of one expansion so the user sees them all at
//! once (serde's `Ctxt`).

use proc_macro2::Span;
use std::fmt::Display;

/// The errors found so far, combined into one [`syn::Error`].
#[derive(Default)]
pub(crate) struct Errors {
    combined: Option<syn::Error>,
}

impl Errors {
    /// Records `error` after the ones already found.
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.combined {
            Some(combined) => combined.combine(error),
            None => self.combined = Some(error),
        }
    }

    /// Records `message` at `span`.
    pub(crate) fn at(&mut self, span: Span, message: impl Display) {
        self.push(syn::Error::new(span, message));
    }

    /// Whether nothing went wrong so far.
    pub(crate) fn is_empty(&self) -> bool {
        self.combined.is_none()
    }

    /// Every recorded error, if any.
    pub(crate) fn finish(self) -> Option<syn::Error> {
        self.combined
    }
}
