//! [`RoutingOps`]: the gate's routing decision and its backward, the row gather and
//! scatter-add that move tokens to their experts and back, and the token permutation by
//! expert (`kernels/route.cu`, `kernels/rows.cu`, `kernels/expert_dispatch.cu`).

use crate::device::{err, CudaBackend, CudaIndices, CudaTensor};
use crate::kernels::{elementwise_cfg, Module, MAX_SHARED_BYTES, REDUCE_SCRATCH_BYTES};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use std::sync::Arc;
use v3lab_reference::backend::{Dispatch, Routing, RoutingOps};
use v3lab_reference::{Error, Result, RouteSpec, ScoreFunc};

const ROUTE_THREADS: u32 = 256;
const PLACE_THREADS: u32 = 256;

impl RoutingOps for CudaBackend {
    fn route(&self, logits: &CudaTensor, bias: Option<&CudaTensor>, spec: &RouteSpec) -> Result<Routing<Self>> {
        let &[n, n_experts] = logits.shape.as_slice() else {
            return Err(Error::shape("route", format!("logits must be [N, E], got {:?}", logits.shape)));
        };
        if spec.n_groups == 0 || n_experts % spec.n_groups != 0 || spec.topk_groups > spec.n_groups {
            return Err(Error::shape("route", format!("{n_experts} experts in {} groups", spec.n_groups)));
        }
        if bias.is_some_and(|b| b.shape != [n_experts]) {
            return Err(Error::shape("route", format!("bias for {n_experts} experts")));
        }
        if spec.top_k > n_experts {
            return Err(Error::shape("route", format!("top-{} of {n_experts} experts", spec.top_k)));
        }
        let k = spec.top_k;
        let mut weights = self.alloc(n * k)?;
        let mut scores = self.alloc(n * n_experts)?;
        // SAFETY: the kernel writes all n × k indices.
        let mut indices = unsafe { self.stream.alloc::<i64>((n * k).max(1)) }.map_err(err)?;
        if n > 0 && k > 0 {
            let shared = 4 * (2 * n_experts + spec.n_groups + k);
            if shared + REDUCE_SCRATCH_BYTES > MAX_SHARED_BYTES {
                return Err(Error::shape("route", format!("{n_experts} experts need {shared} bytes of shared memory")));
            }
            let f = self.func(Module::Route, "route_f32")?;
            let null_bias = self.alloc(1)?;
            let bias_buf = bias.map(|b| &*b.data).unwrap_or(&null_bias);
            let ints = [
                n_experts as i32,
                (spec.score_func == ScoreFunc::Sigmoid) as i32,
                k as i32,
                spec.n_groups as i32,
                spec.topk_groups as i32,
                spec.normalize as i32,
            ];
            let has_bias = bias.is_some() as i32;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut weights).arg(&mut indices).arg(&mut scores).arg(&*logits.data);
            launch.arg(bias_buf).arg(&has_bias);
            for i in &ints {
                launch.arg(i);
            }
            launch.arg(&spec.route_scale);
            let cfg = LaunchConfig {
                grid_dim: (n as u32, 1, 1),
                block_dim: (ROUTE_THREADS, 1, 1),
                shared_mem_bytes: shared as u32,
            };
            // SAFETY: n rows of E logits; outputs sized n × k and n × E.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        Ok(Routing {
            weights: self.tensor(weights, vec![n, k]),
            indices: CudaIndices { data: Arc::new(indices), shape: vec![n, k] },
            scores: self.tensor(scores, vec![n, n_experts]),
        })
    }

    /// Backward of [`RoutingOps::route`] to the gate logits, one thread per token.
    fn route_backward(
        &self,
        r: &Routing<Self>,
        dweights: &CudaTensor,
        dscores: Option<&CudaTensor>,
        spec: &RouteSpec,
    ) -> Result<CudaTensor> {
        let op = "route_backward";
        let (&[n, n_experts], &[wn, k]) = (r.scores.shape.as_slice(), r.weights.shape.as_slice()) else {
            return Err(Error::shape(op, format!("scores {:?}, weights {:?}", r.scores.shape, r.weights.shape)));
        };
        if wn != n || dweights.shape != r.weights.shape || r.indices.shape != r.weights.shape {
            return Err(Error::shape(
                op,
                format!("weights {:?}, dweights {:?}, indices {:?}", r.weights.shape, dweights.shape, r.indices.shape),
            ));
        }
        if let Some(d) = dscores.filter(|d| d.shape != r.scores.shape) {
            return Err(Error::shape(op, format!("dscores {:?} for {:?}", d.shape, r.scores.shape)));
        }
        let mut dlogits = self.alloc(n * n_experts)?;
        if n * n_experts > 0 {
            let f = self.func(Module::Route, "route_backward_f32")?;
            let null = self.alloc(1)?;
            let dscores_buf = dscores.map(|d| &*d.data).unwrap_or(&null);
            let n64 = n as i64;
            let ints = [
                dscores.is_some() as i32,
                n_experts as i32,
                k as i32,
                spec.normalize as i32,
                (spec.score_func == ScoreFunc::Sigmoid) as i32,
            ];
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut dlogits).arg(&*r.scores.data).arg(&*r.weights.data).arg(&*r.indices.data);
            launch.arg(&*dweights.data).arg(dscores_buf).arg(&ints[0]).arg(&n64);
            for i in &ints[1..] {
                launch.arg(i);
            }
            launch.arg(&spec.route_scale).arg(&*word);
            // SAFETY: n rows of E scores and K weights, indices, dweights (checked); expert
            // ids are range-checked in the kernel.
            unsafe { launch.launch(elementwise_cfg(n)) }.map_err(err)?;
        }
        Ok(self.tensor(dlogits, vec![n, n_experts]))
    }

    fn gather_rows(&self, x: &CudaTensor, rows: &CudaIndices) -> Result<CudaTensor> {
        let &[n_rows, d] = x.shape.as_slice() else {
            return Err(Error::shape("gather_rows", format!("x must be [N, D], got {:?}", x.shape)));
        };
        let m: usize = rows.shape.iter().product();
        let mut out = self.alloc(m * d)?;
        self.launch_rows(Module::Rows, "gather_rows_f32", &mut out, &x.data, rows, n_rows, d)?;
        Ok(self.tensor(out, vec![m, d]))
    }

    fn scatter_add_rows(&self, dst: &CudaTensor, rows: &CudaIndices, src: &CudaTensor) -> Result<CudaTensor> {
        let m: usize = rows.shape.iter().product();
        let (&[n_rows, d], &[sm, sd]) = (dst.shape.as_slice(), src.shape.as_slice()) else {
            return Err(Error::shape("scatter_add_rows", format!("{:?} rows into {:?}", src.shape, dst.shape)));
        };
        if sm != m || sd != d {
            return Err(Error::shape("scatter_add_rows", format!("{:?} rows into {:?}", src.shape, dst.shape)));
        }
        let mut out = self.stream.clone_dtod(&*dst.data).map_err(err)?;
        self.launch_rows(Module::Rows, "scatter_add_rows_f32", &mut out, &src.data, rows, n_rows, d)?;
        Ok(self.tensor(out, dst.shape.clone()))
    }

    /// The override of `RoutingOps::expert_dispatch`: counting sort on the device; only the
    /// E counts travel to the host (the loop over experts needs the offsets there).
    fn expert_dispatch(&self, indices: &CudaIndices, n_experts: usize) -> Result<Dispatch<Self>> {
        let nk: usize = indices.shape.iter().product();
        let top_k = indices.shape.get(1).copied().unwrap_or(1).max(1);
        let mut counts = self.stream.alloc_zeros::<i32>(n_experts.max(1)).map_err(err)?;
        if nk > 0 {
            let f = self.func(Module::ExpertDispatch, "expert_count_i64")?;
            let (nk64, e64) = (nk as i64, n_experts as i64);
            let word = self.error_word.lock().map_err(|_| err("error word lock poisoned"))?;
            let mut launch = self.stream.launch_builder(&f);
            launch.arg(&mut counts).arg(&*indices.data).arg(&nk64).arg(&e64).arg(&*word);
            // SAFETY: expert ids are range-checked in the kernel.
            unsafe { launch.launch(elementwise_cfg(nk)) }.map_err(err)?;
        }
        // Reads the error word: an expert id out of range fails here, as on the CPU.
        self.check_error_word()?;
        let counts = self.stream.clone_dtoh(&counts).map_err(err)?;
        let mut offsets = vec![0usize];
        for &c in counts.iter().take(n_experts) {
            offsets.push(offsets.last().expect("non-empty") + c as usize);
        }
        // SAFETY: expert_place writes every one of the nk positions (the counts sum to nk).
        let mut token_rows = unsafe { self.stream.alloc::<i64>(nk.max(1)) }.map_err(err)?;
        let mut slots = unsafe { self.stream.alloc::<i64>(nk.max(1)) }.map_err(err)?;
        let mut rows_by_token = unsafe { self.stream.alloc::<i64>(nk.max(1)) }.map_err(err)?;
        if nk > 0 && n_experts > 0 {
            let host_offsets: Vec<i64> = offsets.iter().map(|&o| o as i64).collect();
            let dev_offsets = self.stream.clone_htod(&host_offsets).map_err(err)?;
            let f = self.func(Module::ExpertDispatch, "expert_place_i64")?;
            let (nk64, k64) = (nk as i64, top_k as i64);
            let mut launch = self.stream.launch_builder(&f);
            launch
                .arg(&mut token_rows)
                .arg(&mut slots)
                .arg(&mut rows_by_token)
                .arg(&*indices.data)
                .arg(&dev_offsets)
                .arg(&nk64)
                .arg(&k64);
            let cfg = LaunchConfig {
                grid_dim: (n_experts as u32, 1, 1),
                block_dim: (PLACE_THREADS, 1, 1),
                shared_mem_bytes: 0,
            };
            // SAFETY: positions offsets[e]..offsets[e+1] are inside the nk outputs.
            unsafe { launch.launch(cfg) }.map_err(err)?;
        }
        let idx = |data| CudaIndices { data: Arc::new(data), shape: vec![nk] };
        Ok(Dispatch { token_rows: idx(token_rows), slots: idx(slots), rows_by_token: idx(rows_by_token), offsets })
    }
}
