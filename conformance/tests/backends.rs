//! The generic conformance suite, stamped out per check (see `v3lab_conformance::suite`):
//! `<check>::cuda` compares the CUDA backend with the CPU reference (skipped, and saying
//! so, without a device); `<check>::cpu_catches_fault` shows the check fails on a CPU
//! backend with a fault injected.

use v3lab_conformance::conformance_tests;
use v3lab_conformance::suite::*;

conformance_tests! {
    layout: check_layout, ["upload", "download", "download_f64", "upload_f64", "zeros", "reshape", "permute", "narrow", "concat", "expand", "write_at"];
    elementwise: check_elementwise, ["add", "mul", "scale", "sum_axis"];
    products: check_products, ["linear", "matmul", "linear_backward:0", "linear_backward:1"];
    mixed_products: check_mixed_products, ["linear_mixed", "linear_backward_mixed:0", "linear_backward_mixed:1"];
    norm_swiglu: check_norm_swiglu, ["rms_norm_forward:0", "rms_norm_forward:1", "swiglu_forward"];
    rope: check_rope, ["rope_forward", "rope_backward"];
    embedding_rows: check_embedding_rows, ["upload_indices", "embedding_forward", "gather_rows", "sum_rows_in_order", "scatter_add_rows"];
    attention: check_attention, ["attention_forward:0", "attention_forward:1", "attention_backward:0", "attention_backward:1", "attention_backward:2"];
    latent_attention: check_latent_attention, ["latent_attention_forward"];
    route: check_route, ["route:0", "route:1", "route:2"];
    dispatch: check_dispatch, ["download_indices", "expert_dispatch:0", "expert_dispatch:1", "expert_dispatch:2"];
    moe: check_moe, ["sum_rows_in_order", "gather_rows"];
    mla: check_mla, ["rope_forward", "linear_mixed"];
    random_model: check_random_model, ["latent_attention_forward", "embedding_forward"];
    goldens: check_goldens, ["rms_norm_forward"];
    norm_act_backward: check_norm_act_backward, ["rms_norm_backward:0", "rms_norm_backward:1", "swiglu_backward:0", "swiglu_backward:1"];
    embedding_loss: check_embedding_loss, ["embedding_backward", "cross_entropy_forward:0", "cross_entropy_forward:1", "cross_entropy_backward"];
    route_backward: check_route_backward, ["route_backward"];
    optimizer: check_optimizer, ["adamw_step", "sum_squares"];
    training_step: check_training_step, ["route_backward", "adamw_step"];
}

/// FP8 is an inherent part of the CUDA backend (no `Backend` method yet): quantisation bit
/// for bit and the block-scaled GEMM against the host oracle of `suite_fp8`, whose own
/// tests run everywhere.
#[test]
fn fp8_cuda() {
    let Some(b) = v3lab_gpu::cuda_or_skip() else { return };
    v3lab_conformance::suite_fp8::check_fp8_cuda(&b);
    println!("fp8: CUDA matches the host oracle on {}", b.device_name());
}

/// `CudaBackend::new` fails cleanly (no panic) where there is no device; where there is
/// one, it reports its architecture.
#[test]
fn cuda_backend_opens_or_explains() {
    match v3lab_gpu::CudaBackend::new() {
        Ok(b) => println!("CUDA device: {} (compute capability {:?})", b.device_name(), b.compute_capability()),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("cuda"), "the error names the backend: {msg}");
            println!("skipped: no CUDA device ({msg})");
        }
    }
}
