//! `family!`: declares one family trait of the backend exactly as written, and also
//! exports its list of signatures, so that code which must follow every operation (the
//! conformance suite's fault injector) is generated from the trait instead of written out
//! beside it.
//!
//! ```text
//! family! {
//!     /// docs
//!     pub trait LayoutOps: MemoryOps {
//!         fn reshape(&self, t: &Self::Tensor, shape: &[usize]) -> Result<Self::Tensor>;
//!         …
//!     }
//! }
//! ```
//!
//! emits the trait unchanged and a hidden exported macro of the same name (macros and
//! types live in different namespaces), `v3lab_reference::LayoutOps!(callback)`, which
//! expands to `callback! { LayoutOps [ fn reshape(&self, t: &Self::Tensor, shape: &[usize])
//! -> Result<Self::Tensor>; … ] }`: associated types as `type Name;`, every method (default
//! or not) as its bare signature, attributes and bodies dropped.
//! [`crate::for_each_backend_family!`] calls it for all nine families.
//!
//! The family's supertraits are written `A + B + …` with single-token bounds; methods take
//! `&self`; associated-type bounds are plain names (`Clone + Debug`).

macro_rules! family {
    ($(#[$doc:meta])* pub trait $family:ident: $first:ident $(+ $more:tt)* { $($items:tt)* }) => {
        $(#[$doc])*
        pub trait $family: $first $(+ $more)* { $($items)* }
        // `$` itself is handed down as a token so the exported macro can have metavariables.
        family!(@signatures ($) $family [] $($items)*);
    };
    // One item at a time (a muncher), accumulating the signatures.
    (@signatures ($d:tt) $family:ident [$($acc:tt)*]
        $(#[$meta:meta])* type $name:ident $(: $first_bound:ident $(+ $bound:ident)*)?; $($rest:tt)*) => {
        family!(@signatures ($d) $family [$($acc)* type $name;] $($rest)*);
    };
    (@signatures ($d:tt) $family:ident [$($acc:tt)*]
        $(#[$meta:meta])* fn $op:ident($($params:tt)*) -> $ret:ty; $($rest:tt)*) => {
        family!(@signatures ($d) $family [$($acc)* fn $op($($params)*) -> $ret;] $($rest)*);
    };
    (@signatures ($d:tt) $family:ident [$($acc:tt)*]
        $(#[$meta:meta])* fn $op:ident($($params:tt)*) -> $ret:ty $body:block $($rest:tt)*) => {
        family!(@signatures ($d) $family [$($acc)* fn $op($($params)*) -> $ret;] $($rest)*);
    };
    (@signatures ($d:tt) $family:ident [$($acc:tt)*]) => {
        #[doc(hidden)]
        #[macro_export]
        macro_rules! $family {
            ($d callback:ident) => { $d callback! { $family [$($acc)*] } };
        }
    };
}
