//! Cross-entropy on the CPU: the log-sum-exp of each row with its max subtracted first.

use super::{as2, checked_row, shape_err, Cpu, CpuFloat};
use crate::backend::LossOps;
use crate::error::Result;
use ndarray::{Array1, ArrayD};

impl<F: CpuFloat> LossOps for Cpu<F> {
    /// Mean cross-entropy over the rows of `logits [N, V]` (the next-token loss of §2.2 and
    /// eq. 24 of the MTP loss): `1/N Σ_n lse_n − logits[n, t_n]`. Returns the loss in f64 and
    /// `lse [N]`.
    fn cross_entropy_forward(&self, logits: &ArrayD<F>, targets: &ArrayD<i64>) -> Result<(f64, ArrayD<F>)> {
        let l = as2(logits, "cross_entropy_forward")?;
        if targets.len() != l.nrows() || l.nrows() == 0 {
            return Err(shape_err(
                "cross_entropy_forward",
                format!("logits {:?}, targets {:?}", l.shape(), targets.shape()),
            ));
        }
        let mut lse = Array1::<F>::zeros(l.nrows());
        let mut total = 0.0f64;
        for ((row, &t), out) in l.outer_iter().zip(targets.iter()).zip(lse.iter_mut()) {
            let max = row.iter().copied().fold(F::neg_infinity(), F::max);
            *out = max + row.iter().map(|&v| (v - max).exp()).sum::<F>().ln();
            total += (*out - row[checked_row(t, l.ncols(), "target")?]).as_f64();
        }
        Ok((total / l.nrows() as f64, lse.into_dyn()))
    }
    /// Backward of [`Self::cross_entropy_forward`]: `dloss · (softmax − onehot) / N`.
    fn cross_entropy_backward(
        &self,
        logits: &ArrayD<F>,
        lse: &ArrayD<F>,
        targets: &ArrayD<i64>,
        dloss: f32,
    ) -> Result<ArrayD<F>> {
        let l = as2(logits, "cross_entropy_backward")?;
        if targets.len() != l.nrows() || lse.len() != l.nrows() {
            return Err(shape_err("cross_entropy_backward", format!("logits {:?}", l.shape())));
        }
        let c = F::of_f32(dloss) / F::of_f64(l.nrows() as f64);
        let mut d = l.to_owned();
        for ((mut row, &t), &m) in d.outer_iter_mut().zip(targets.iter()).zip(lse.iter()) {
            row.mapv_inplace(|v| (v - m).exp() * c);
            row[checked_row(t, l.ncols(), "target")?] -= c;
        }
        Ok(d.into_dyn())
    }
}
