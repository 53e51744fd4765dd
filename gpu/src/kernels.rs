//! The kernel sources of `gpu/kernels/`, embedded in the binary, compiled by NVRTC for the
//! device's architecture at first use and cached: the PTX once per process (a static
//! `OnceLock` per module), the loaded module once per backend.
//!
//! Each `.cu` file is one idea, its forward and backward side by side (kernels named after
//! the op: `rms_norm_forward_f32` and `rms_norm_backward_f32` in `rms_norm.cu`);
//! `common.cuh` (reductions, the error bits) is prepended.

use crate::device::err;
use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use v3lab_reference::Result;

const COMMON: &str = include_str!("../kernels/common.cuh");

/// One `.cu` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Module {
    StridedCopy,
    Elementwise,
    Swiglu,
    RmsNorm,
    Rope,
    Embedding,
    Rows,
    Attention,
    Route,
    ExpertDispatch,
    Fp8Quantize,
    Fp8Gemm,
    CrossEntropy,
    Optim,
}

const MODULES: [Module; 14] = [
    Module::StridedCopy,
    Module::Elementwise,
    Module::Swiglu,
    Module::RmsNorm,
    Module::Rope,
    Module::Embedding,
    Module::Rows,
    Module::Attention,
    Module::Route,
    Module::ExpertDispatch,
    Module::Fp8Quantize,
    Module::Fp8Gemm,
    Module::CrossEntropy,
    Module::Optim,
];

impl Module {
    fn index(self) -> usize {
        MODULES.iter().position(|&m| m == self).expect("every module is listed")
    }

    pub(crate) fn file(self) -> &'static str {
        match self {
            Module::StridedCopy => "strided_copy.cu",
            Module::Elementwise => "elementwise.cu",
            Module::Swiglu => "swiglu.cu",
            Module::RmsNorm => "rms_norm.cu",
            Module::Rope => "rope.cu",
            Module::Embedding => "embedding.cu",
            Module::Rows => "rows.cu",
            Module::Attention => "attention.cu",
            Module::Route => "route.cu",
            Module::ExpertDispatch => "expert_dispatch.cu",
            Module::Fp8Quantize => "fp8_quantize.cu",
            Module::Fp8Gemm => "fp8_gemm.cu",
            Module::CrossEntropy => "cross_entropy.cu",
            Module::Optim => "optim.cu",
        }
    }

    pub(crate) fn source(self) -> &'static str {
        match self {
            Module::StridedCopy => include_str!("../kernels/strided_copy.cu"),
            Module::Elementwise => include_str!("../kernels/elementwise.cu"),
            Module::Swiglu => include_str!("../kernels/swiglu.cu"),
            Module::RmsNorm => include_str!("../kernels/rms_norm.cu"),
            Module::Rope => include_str!("../kernels/rope.cu"),
            Module::Embedding => include_str!("../kernels/embedding.cu"),
            Module::Rows => include_str!("../kernels/rows.cu"),
            Module::Attention => include_str!("../kernels/attention.cu"),
            Module::Route => include_str!("../kernels/route.cu"),
            Module::ExpertDispatch => include_str!("../kernels/expert_dispatch.cu"),
            Module::Fp8Quantize => include_str!("../kernels/fp8_quantize.cu"),
            Module::Fp8Gemm => include_str!("../kernels/fp8_gemm.cu"),
            Module::CrossEntropy => include_str!("../kernels/cross_entropy.cu"),
            Module::Optim => include_str!("../kernels/optim.cu"),
        }
    }
}

/// The whole source NVRTC compiles for a module.
pub(crate) fn full_source(module: Module) -> String {
    format!("{COMMON}\n// ---- {} ----\n{}", module.file(), module.source())
}

/// Compiles for a virtual architecture `compute_XY` of the device (compute_90 on Hopper);
/// the driver turns the PTX into sm_XY code when the module loads. No fast math: the CPU
/// reference is the spec.
fn compile(module: Module, arch: &'static str) -> std::result::Result<String, String> {
    let opts = CompileOptions {
        arch: Some(arch),
        name: Some(module.file().into()),
        options: vec!["--std=c++17".into()],
        ..Default::default()
    };
    compile_ptx_with_opts(full_source(module), opts).map(|ptx| ptx.to_src()).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            format!("NVRTC failed on {}:\n{}", module.file(), log.to_string_lossy())
        }
        other => format!("NVRTC failed on {}: {other}", module.file()),
    })
}

/// PTX per module, compiled once per process (the first architecture asked for wins; a
/// process uses one device).
static PTX: [OnceLock<std::result::Result<String, String>>; MODULES.len()] = [const { OnceLock::new() }; MODULES.len()];

/// The modules loaded into one backend's context, and the functions looked up in them
/// (a launch then costs no driver lookup).
pub(crate) struct Kernels {
    arch: &'static str,
    loaded: [OnceLock<Arc<CudaModule>>; MODULES.len()],
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl Kernels {
    pub(crate) fn new((major, minor): (i32, i32)) -> Self {
        // cudarc wants a 'static str; one short string per process at most per arch.
        static ARCH: OnceLock<&'static str> = OnceLock::new();
        let arch = ARCH.get_or_init(|| Box::leak(format!("compute_{major}{minor}").into_boxed_str()));
        Kernels { arch, loaded: [const { OnceLock::new() }; MODULES.len()], functions: Mutex::new(HashMap::new()) }
    }

    pub(crate) fn function(&self, ctx: &Arc<CudaContext>, module: Module, name: &'static str) -> Result<CudaFunction> {
        if let Some(f) = self.functions.lock().map_err(|_| err("kernel table lock poisoned"))?.get(name) {
            return Ok(f.clone());
        }
        let i = module.index();
        let loaded = match self.loaded[i].get() {
            Some(m) => m.clone(),
            None => {
                let ptx = PTX[i].get_or_init(|| compile(module, self.arch)).clone().map_err(err)?;
                let m =
                    ctx.load_module(Ptx::from_src(ptx)).map_err(|e| err(format!("loading {}: {e}", module.file())))?;
                self.loaded[i].get_or_init(|| m).clone()
            }
        };
        let f = loaded.load_function(name).map_err(|e| err(format!("kernel {name} in {}: {e}", module.file())))?;
        self.functions.lock().map_err(|_| err("kernel table lock poisoned"))?.insert(name, f.clone());
        Ok(f)
    }
}

/// Shared memory a block may use without opting in, static and dynamic together.
pub(crate) const MAX_SHARED_BYTES: usize = 48 * 1024;
/// The static `scratch[32]` of the kernels that call `block_reduce` (`common.cuh`), which
/// counts against [`MAX_SHARED_BYTES`] beside their dynamic shared memory.
pub(crate) const REDUCE_SCRATCH_BYTES: usize = 32 * 4;

/// A 1-D grid-stride launch over `n` elements: 256 threads, enough blocks to fill the
/// device several times over (the kernels loop).
pub(crate) fn elementwise_cfg(n: usize) -> LaunchConfig {
    let blocks = n.div_ceil(256).clamp(1, 65535) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (256, 1, 1), shared_mem_bytes: 0 }
}

/// Threads per row for row-wise kernels (norms, row copies): enough to cover D = 7168 in
/// 28 steps; one block per row keeps the reductions simple.
pub(crate) const ROW_THREADS: u32 = 256;

/// One block of `threads` per row.
pub(crate) fn rows_cfg(rows: usize, threads: u32) -> LaunchConfig {
    LaunchConfig { grid_dim: (rows as u32, 1, 1), block_dim: (threads, 1, 1), shared_mem_bytes: 0 }
}

/// Compiles every module for `arch` (e.g. "compute_90") with NVRTC, without a device:
/// (file, PTX) pairs. Lets a machine with NVRTC but no GPU check the kernels.
pub fn compile_all(arch: &'static str) -> std::result::Result<Vec<(&'static str, String)>, String> {
    MODULES.iter().map(|&m| compile(m, arch).map(|ptx| (m.file(), ptx))).collect()
}

/// Whether NVRTC can be loaded here.
pub fn nvrtc_present() -> bool {
    // SAFETY: only tries to dlopen the library.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kernel compiles for Hopper (compute_90) and the PTX has its entry points.
    /// Needs only NVRTC (no driver, no device): skipped, saying so, without it.
    #[test]
    fn kernels_compile_for_hopper_with_nvrtc() {
        if !nvrtc_present() {
            use std::io::Write;
            let _ = writeln!(std::io::stderr().lock(), "skipped: NVRTC (libnvrtc) not found");
            return;
        }
        let all = compile_all("compute_90").unwrap_or_else(|e| panic!("{e}"));
        for (file, ptx) in &all {
            let module = MODULES.iter().find(|m| m.file() == *file).unwrap();
            for line in module.source().lines().filter(|l| l.starts_with("extern \"C\" __global__ void ")) {
                let name = line["extern \"C\" __global__ void ".len()..].split('(').next().unwrap();
                assert!(ptx.contains(&format!(".entry {name}(")), "{file}: no entry {name} in the PTX");
            }
        }
        println!("all {} kernel modules compile for compute_90", all.len());
    }

    /// Every module's source is non-empty, defines the kernels named after its ops, and
    /// is listed once (what can be checked without NVRTC).
    #[test]
    fn every_module_defines_its_kernels() {
        let expect: [(Module, &[&str]); MODULES.len()] = [
            (Module::StridedCopy, &["strided_copy_f32"]),
            (Module::Elementwise, &["add_f32", "mul_f32", "scale_f32", "sum_axis_f32"]),
            (Module::Swiglu, &["swiglu_forward_f32", "swiglu_backward_f32"]),
            (Module::RmsNorm, &["rms_norm_forward_f32", "rms_norm_backward_f32"]),
            (Module::Rope, &["rope_forward_f32", "rope_backward_f32"]),
            (Module::Embedding, &["embedding_forward_f32", "embedding_backward_f32"]),
            (Module::Rows, &["gather_rows_f32", "scatter_add_rows_f32"]),
            (
                Module::Attention,
                &[
                    "attention_forward_f32",
                    "latent_attention_forward_f32",
                    "attention_backward_dq_f32",
                    "attention_backward_dkv_f32",
                ],
            ),
            (Module::Route, &["route_f32", "route_backward_f32"]),
            (Module::ExpertDispatch, &["expert_count_i64", "expert_place_i64"]),
            (Module::Fp8Quantize, &["fp8_quantize_tile_f32", "fp8_quantize_block_f32"]),
            (Module::Fp8Gemm, &["fp8_gemm_block_scaled_f32"]),
            (Module::CrossEntropy, &["cross_entropy_forward_f32", "cross_entropy_backward_f32"]),
            (Module::Optim, &["adamw_step_f32", "sum_squares_f32"]),
        ];
        for (i, (m, names)) in expect.iter().enumerate() {
            assert_eq!(m.index(), i);
            for name in *names {
                assert!(
                    m.source().contains(&format!("extern \"C\" __global__ void {name}(")),
                    "{} lacks {name}",
                    m.file()
                );
            }
        }
    }
}
