//! A CPU backend with one deliberate fault, to show that each conformance check can fail.
//!
//! [`Faulty`] runs [`CpuBackend`] for every operation and, for the one operation named by
//! its fault, returns a slightly wrong result: every f32/f64 value `x` becomes
//! `1.001·x + 1e-3` (far outside every f32 tolerance, far inside what a plausible kernel bug
//! looks like), index tensors are rotated by one place, and tensors the op writes through
//! `&mut` are perturbed the same way. `"op"` perturbs every output of `op`; `"op:i"` only
//! its i-th (of a tuple, or of a [`Routing`]'s weights, indices, scores, or a
//! [`Dispatch`]'s token rows, slots, rows by token).
//!
//! The implementation is generated from the backend's trait definitions
//! (`v3lab_reference::for_each_backend_family!`), so a new operation needs nothing here,
//! and [`all_ops`] lists every operation a check must cover.

use ndarray::{ArrayD, ArrayViewD};
use v3lab_reference::backend::prelude::*;
use v3lab_reference::backend::{AdamWStep, Dispatch, Routing};
use v3lab_reference::fp8::LinearPrecision;
use v3lab_reference::{CpuBackend, Result, RouteSpec};

/// `CpuBackend` with the operation named `fault` made wrong (none: the plain reference,
/// on which every check must pass).
#[derive(Debug, Clone, Copy)]
pub struct Faulty {
    fault: Option<(&'static str, Which)>,
}

impl Faulty {
    /// `fault`: `"op"` or `"op:i"` (module doc); `None` for no fault. Panics on a name that is
    /// not an operation of the backend (a fault that never fires would prove nothing).
    pub fn new(fault: Option<&'static str>) -> Self {
        let fault = fault.map(|f| {
            let (op, which) = match f.split_once(':') {
                Some((op, i)) => {
                    (op, Which::Only(i.parse().unwrap_or_else(|_| panic!("fault {f:?}: bad output index"))))
                }
                None => (f, Which::All),
            };
            assert!(all_ops().contains(&op), "fault {f:?}: no backend operation is called {op:?}");
            (op, which)
        });
        Faulty { fault }
    }

    fn which(&self, op: &str) -> Which {
        match self.fault {
            Some((faulty_op, which)) if faulty_op == op => which,
            _ => Which::Off,
        }
    }
}

/// Every operation of the backend, by family (generated from the traits).
pub fn all_ops() -> Vec<&'static str> {
    macro_rules! names {
        ($family:ident [$(type $assoc:ident;)* $(fn $op:ident($($params:tt)*) -> $ret:ty;)*]) => {
            &[$(stringify!($op)),*] as &[&'static str]
        };
    }
    v3lab_reference::for_each_backend_family!([names]).concat()
}

/// The operations [`Faulty`] never perturbs (their results are names, shapes and a scheduling
/// hint, which every check reads to go on at all): all others must each be caught by some
/// check.
pub const UNPERTURBED_OPS: &[&str] = &["name", "host_threads", "shape", "indices_shape"];

/// Which outputs of the faulty op go wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Off,
    All,
    Only(usize),
}

impl Which {
    /// The selection for the i-th part of a composite output.
    fn part(self, i: usize) -> Which {
        match self {
            Which::Only(j) if j == i => Which::All,
            Which::Only(_) => Which::Off,
            w => w,
        }
    }
    fn on(self) -> bool {
        matches!(self, Which::All | Which::Only(0))
    }
}

fn perturb_values(t: &mut ArrayD<f32>) {
    t.mapv_inplace(|x| x * 1.001 + 1e-3);
}

/// How an argument travels from a [`Faulty`] method to the same [`CpuBackend`] method:
/// held for the call (a [`Routing`] is converted to the CPU's type), passed, and, when the
/// op writes through it, perturbed afterwards.
trait Relay {
    type Held;
    type Passed<'b>
    where
        Self: 'b;
    fn hold(self) -> Self::Held;
    fn pass<'b>(held: &'b mut Self::Held) -> Self::Passed<'b>
    where
        Self: 'b;
    fn touch(_held: &mut Self::Held, _which: Which) {}
}

/// Arguments passed through as they are.
macro_rules! relay_as_is {
    ($(impl<$($lt:lifetime),*> for $ty:ty;)*) => {$(
        impl<$($lt),*> Relay for $ty {
            type Held = Self;
            type Passed<'b> = Self where Self: 'b;
            fn hold(self) -> Self {
                self
            }
            #[allow(clippy::clone_on_copy)] // views are Clone, not Copy
            fn pass<'b>(held: &'b mut Self) -> Self where Self: 'b {
                Clone::clone(&*held)
            }
        }
    )*};
}

relay_as_is! {
    impl<> for usize;
    impl<> for f32;
    impl<> for bool;
    impl<'a> for &'a [usize];
    impl<'a> for &'a ArrayD<f32>;
    impl<'a> for &'a ArrayD<i64>;
    impl<'a, 'c> for &'a [&'c ArrayD<f32>];
    impl<'a> for Option<&'a ArrayD<f32>>;
    impl<'a> for &'a RouteSpec;
    impl<'a> for &'a LinearPrecision;
    impl<'a> for &'a AdamWStep;
    impl<'a> for ArrayViewD<'a, f32>;
    impl<'a> for ArrayViewD<'a, f64>;
    impl<'a> for ArrayViewD<'a, i64>;
}

impl Relay for &mut ArrayD<f32> {
    type Held = Self;
    type Passed<'b>
        = &'b mut ArrayD<f32>
    where
        Self: 'b;
    fn hold(self) -> Self {
        self
    }
    fn pass<'b>(held: &'b mut Self) -> &'b mut ArrayD<f32>
    where
        Self: 'b,
    {
        held
    }
    fn touch(held: &mut Self, which: Which) {
        if which != Which::Off {
            perturb_values(held);
        }
    }
}

impl Relay for &Routing<Faulty> {
    type Held = Routing<CpuBackend>;
    type Passed<'b>
        = &'b Routing<CpuBackend>
    where
        Self: 'b;
    fn hold(self) -> Routing<CpuBackend> {
        Routing { weights: self.weights.clone(), indices: self.indices.clone(), scores: self.scores.clone() }
    }
    fn pass<'b>(held: &'b mut Routing<CpuBackend>) -> &'b Routing<CpuBackend>
    where
        Self: 'b,
    {
        held
    }
}

/// The CPU's result as the faulty op returns it (perturbed where `which` says).
trait Outcome<Out> {
    fn outcome(self, which: Which) -> Out;
}

impl<T, U: Outcome<T>> Outcome<Result<T>> for Result<U> {
    fn outcome(self, which: Which) -> Result<T> {
        self.map(|u| u.outcome(which))
    }
}

impl Outcome<ArrayD<f32>> for ArrayD<f32> {
    fn outcome(mut self, which: Which) -> ArrayD<f32> {
        if which.on() {
            perturb_values(&mut self);
        }
        self
    }
}

impl Outcome<ArrayD<f64>> for ArrayD<f64> {
    fn outcome(self, which: Which) -> ArrayD<f64> {
        if which.on() {
            self.mapv(|x| x * 1.001 + 1e-3)
        } else {
            self
        }
    }
}

impl Outcome<f64> for f64 {
    fn outcome(self, which: Which) -> f64 {
        if which.on() {
            self * 1.001 + 1e-3
        } else {
            self
        }
    }
}

/// Indices rotated by one place (still in range, so the fault is a wrong answer rather
/// than an error); a single index, or all equal, is moved up by one.
impl Outcome<ArrayD<i64>> for ArrayD<i64> {
    fn outcome(self, which: Which) -> ArrayD<i64> {
        if !which.on() || self.is_empty() {
            return self;
        }
        let mut flat: Vec<i64> = self.iter().copied().collect();
        if flat.iter().all(|&i| i == flat[0]) {
            flat[0] += 1;
        } else {
            flat.rotate_left(1);
        }
        ArrayD::from_shape_vec(self.raw_dim(), flat).expect("same length")
    }
}

/// Results no check can be wrong about in a way worth injecting: names, shapes, thread
/// counts, `()`.
macro_rules! outcome_as_is {
    ($($ty:ty),*) => {$(
        impl Outcome<$ty> for $ty {
            fn outcome(self, _which: Which) -> $ty {
                self
            }
        }
    )*};
}

outcome_as_is!(&'static str, Vec<usize>, usize, ());

impl<A: Outcome<A>, B: Outcome<B>> Outcome<(A, B)> for (A, B) {
    fn outcome(self, which: Which) -> (A, B) {
        (self.0.outcome(which.part(0)), self.1.outcome(which.part(1)))
    }
}

impl<A: Outcome<A>, B: Outcome<B>, C: Outcome<C>> Outcome<(A, B, C)> for (A, B, C) {
    fn outcome(self, which: Which) -> (A, B, C) {
        (self.0.outcome(which.part(0)), self.1.outcome(which.part(1)), self.2.outcome(which.part(2)))
    }
}

impl Outcome<Routing<Faulty>> for Routing<CpuBackend> {
    fn outcome(self, which: Which) -> Routing<Faulty> {
        Routing {
            weights: self.weights.outcome(which.part(0)),
            indices: self.indices.outcome(which.part(1)),
            scores: self.scores.outcome(which.part(2)),
        }
    }
}

impl Outcome<Dispatch<Faulty>> for Dispatch<CpuBackend> {
    fn outcome(self, which: Which) -> Dispatch<Faulty> {
        Dispatch {
            token_rows: self.token_rows.outcome(which.part(0)),
            slots: self.slots.outcome(which.part(1)),
            rows_by_token: self.rows_by_token.outcome(which.part(2)),
            offsets: self.offsets,
        }
    }
}

/// One family's methods: hold each argument, call the CPU, perturb what the fault selects.
macro_rules! relay_to_cpu {
    ($family:ident [$(type $assoc:ident;)* $(fn $op:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty;)*]) => {
        impl $family for Faulty {
            $(type $assoc = <CpuBackend as MemoryOps>::$assoc;)*
            $(
                #[allow(clippy::too_many_arguments, unused_mut)]
                fn $op(&self $(, $arg: $ty)*) -> $ret {
                    let which = self.which(stringify!($op));
                    $(let mut $arg = <$ty as Relay>::hold($arg);)*
                    let out = CpuBackend.$op($(<$ty as Relay>::pass(&mut $arg)),*);
                    $(<$ty as Relay>::touch(&mut $arg, which);)*
                    Outcome::outcome(out, which)
                }
            )*
        }
    };
}

v3lab_reference::for_each_backend_family!(relay_to_cpu);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_ops_lists_every_family() {
        let ops = all_ops();
        for op in ["upload", "permute", "add", "linear_backward", "rope_forward", "cross_entropy_backward"] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
        for op in ["attention_backward", "latent_attention_forward", "route", "expert_dispatch", "sum_squares"] {
            assert!(ops.contains(&op), "{op} missing from {ops:?}");
        }
    }

    #[test]
    fn a_fault_perturbs_only_its_op_and_output() {
        let x = ArrayD::from_shape_vec(vec![2, 2], vec![1.0f32, -2.0, 3.0, 0.0]).unwrap();
        let clean = Faulty::new(None);
        let faulty = Faulty::new(Some("rms_norm_forward:1"));
        let w = ArrayD::from_elem(vec![2], 1.0f32);
        let (y0, r0) = clean.rms_norm_forward(&x, &w, 1e-6).unwrap();
        let (y1, r1) = faulty.rms_norm_forward(&x, &w, 1e-6).unwrap();
        assert_eq!(y0, y1, "output 0 untouched");
        assert_ne!(r0, r1, "output 1 perturbed");
        assert_eq!(clean.add(&x, &x).unwrap(), faulty.add(&x, &x).unwrap(), "other ops untouched");
        let zeros = Faulty::new(Some("zeros")).zeros(&[3]).unwrap();
        assert!(zeros.iter().all(|&z| z != 0.0), "even zeros go wrong: {zeros:?}");
    }

    #[test]
    #[should_panic(expected = "no backend operation is called")]
    fn an_unknown_fault_is_refused() {
        Faulty::new(Some("rms_norm"));
    }
}
