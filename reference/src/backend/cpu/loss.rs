//! Cross-entropy on the CPU: the log-sum-exp of each row with its max subtracted first.

use super::{as2, checked_row, shape_err, zip, Cpu, CpuFloat};
use crate::backend::LossOps;
use crate::error::Result;
use ndarray::{Array1, ArrayD, ArrayView1, ArrayViewMut1, Zip};

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
        let targets = target_columns(targets, l.ncols())?;
        let (mut lse, mut loss) = (Array1::<F>::zeros(l.nrows()), Array1::<F>::zeros(l.nrows()));
        zip!(
            l.len(),
            Zip::from(&mut lse).and(&mut loss).and(l.rows()).and(&targets),
            for_each(|lse: &mut F, loss: &mut F, row: ArrayView1<'_, F>, &t| {
                let max = row.iter().copied().fold(F::neg_infinity(), F::max);
                *lse = max + row.iter().map(|&v| (v - max).exp()).sum::<F>().ln();
                *loss = *lse - row[t];
            })
        );
        // Summed on one thread in row order, in f64.
        let total: f64 = loss.iter().map(|&x| x.as_f64()).sum();
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
        let targets = target_columns(targets, l.ncols())?;
        let lse = lse
            .view()
            .into_shape_with_order(l.nrows())
            .map_err(|e| shape_err("cross_entropy_backward", e.to_string()))?;
        let mut d = l.to_owned();
        zip!(
            d.len(),
            Zip::from(d.rows_mut()).and(&targets).and(&lse),
            for_each(|mut row: ArrayViewMut1<'_, F>, &t, &m| {
                row.mapv_inplace(|v| (v - m).exp() * c);
                row[t] -= c;
            })
        );
        Ok(d.into_dyn())
    }
}

/// Each target as a column of the logits, checked: `[N]`.
fn target_columns(targets: &ArrayD<i64>, vocab: usize) -> Result<Array1<usize>> {
    targets.iter().map(|&t| checked_row(t, vocab, "target")).collect::<Result<Vec<_>>>().map(Array1::from)
}
