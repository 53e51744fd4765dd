//! The generic conformance suite, stamped out per check (see `v3lab_conformance::suite`):
//! `<check>::cuda` compares the CUDA backend with the CPU reference (skipped, and saying
//! so, without a device); `<check>::cpu_catches_fault` shows the check fails on a CPU
//! backend with a fault injected.

use v3lab_conformance::conformance_tests;
use v3lab_conformance::suite::*;

conformance_tests! {
    layout: check_layout, Fault::Permute;
    layout_concat: check_layout, Fault::Concat;
    layout_write_at: check_layout, Fault::WriteAt;
    elementwise: check_elementwise, Fault::Add;
    elementwise_sum: check_elementwise, Fault::SumAxis;
    products: check_products, Fault::Matmul;
    products_linear: check_products, Fault::Linear;
    norm_swiglu: check_norm_swiglu, Fault::RmsNorm;
    norm_swiglu_act: check_norm_swiglu, Fault::Swiglu;
    rope: check_rope, Fault::Rope;
    rope_backward: check_rope, Fault::RopeBackward;
    embedding_rows: check_embedding_rows, Fault::Embedding;
    embedding_rows_scatter: check_embedding_rows, Fault::ScatterAdd;
    attention: check_attention, Fault::Attention;
    attention_backward: check_attention, Fault::AttentionBackward;
    latent_attention: check_latent_attention, Fault::LatentAttention;
    route: check_route, Fault::RouteIndices;
    dispatch: check_dispatch, Fault::Dispatch;
    moe: check_moe, Fault::SumAxis;
    mla: check_mla, Fault::Rope;
    random_model: check_random_model, Fault::LatentAttention;
    goldens: check_goldens, Fault::RmsNorm;
    norm_act_backward: check_norm_act_backward, Fault::RmsNormBackward;
    norm_act_backward_swiglu: check_norm_act_backward, Fault::SwigluBackward;
    embedding_loss: check_embedding_loss, Fault::EmbeddingBackward;
    embedding_loss_ce: check_embedding_loss, Fault::CrossEntropy;
    route_backward: check_route_backward, Fault::RouteBackward;
    optimizer: check_optimizer, Fault::AdamW;
    optimizer_sum_squares: check_optimizer, Fault::SumSquares;
    training_step: check_training_step, Fault::RouteBackward;
    training_step_adamw: check_training_step, Fault::AdamW;
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
